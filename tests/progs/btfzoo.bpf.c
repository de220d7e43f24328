// SPDX-License-Identifier: GPL-2.0
/* A type zoo in the shape of a libbpf-tools program: the event struct from a header,
 * reserved through a local pointer, perf output from a stack variable, a CO-RE flavour
 * struct, config in const volatile globals, a .kconfig extern and a typeless ksym.
 * The BTF tests compile it with plain clang -g -O2 -target bpf. */
#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "btfzoo.h"

struct task_struct___o {
	int pid;
	int tgid;
} __attribute__((preserve_access_index));

const volatile __u32 targ_pid = 0;
const volatile char targ_comm[TASK_COMM_LEN] = "";
extern int LINUX_KERNEL_VERSION __kconfig;
extern const void bpf_prog_fops __ksym;

/* as libbpf-tools do, so that BTF (not only DWARF) describes the event */
struct event *unused_event __attribute__((unused));
struct zoo_packed packed_seen;
struct zoo_flex *flex_last;
__u64 counter = 1;
__attribute__((section(".data.flags"))) struct zoo_flags flags_init = {
	.kind = 5, .prio = 17, .delta = -3, .st = ZOO_RUN, .big = 0x12345678ABull, .tail = 9 };

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 0); /* sized by the loader */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} perf_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, zoo_slots_t);
} hists SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getpid")
int zoo_ringbuf(void *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	struct task_struct___o *task = (void *)bpf_get_current_task();
	struct event *e;

	if (targ_pid && pid != targ_pid)
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	e->pid = pid;
	e->ret = bpf_core_field_exists(task->tgid) ? BPF_CORE_READ(task, tgid) : -1;
	e->st = ZOO_RUN;
	e->wide = ZOO_HUGE;
	e->flags.kind = 3;
	e->ts = bpf_ktime_get_ns() + counter + LINUX_KERNEL_VERSION + (__u64)&bpf_prog_fops;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int zoo_perf(void *ctx)
{
	struct event ev = {};
	__u32 key = 0;
	__u32 *slots;

	ev.pid = bpf_get_current_pid_tgid() >> 32;
	packed_seen.b = ev.pid;
	slots = bpf_map_lookup_elem(&hists, &key);
	if (slots)
		__sync_fetch_and_add(&slots[ev.pid & (MAX_SLOTS - 1)], 1);
	if (flex_last)
		ev.in.a = 1;
	bpf_perf_event_output(ctx, &perf_events, BPF_F_CURRENT_CPU, &ev, sizeof(ev));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
