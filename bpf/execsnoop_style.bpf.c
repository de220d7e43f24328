// SPDX-License-Identifier: GPL-2.0
/* A libbpf-tools style program, as such tools ship it: it includes vmlinux.h and
 * libbpf's headers itself, reads config from const volatile globals, leaves map sizes
 * to its loader (max_entries 0), uses a .kconfig extern, reports through a perf
 * buffer, and ships tp_btf and raw_tp variants of one hook. bpfnb must load it as is. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#define TASK_COMM_LEN 16

struct event {
	u32 pid;
	u32 ppid;
	s64 arg;
	char comm[TASK_COMM_LEN];
};

const volatile pid_t targ_tgid = 0;
const volatile bool verbose = false;
extern int LINUX_KERNEL_VERSION __kconfig;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 0); /* sized by the loader */
	__type(key, u32);
	__type(value, u64);
} wakeups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(u32));
	__uint(value_size, sizeof(u32));
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(key_size, sizeof(u32));
} stacks SEC(".maps");

int kernel_version = 0;

SEC("tracepoint/syscalls/sys_enter_lseek")
int handle_lseek(struct trace_event_raw_sys_enter *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32;
	struct event ev = {};
	struct task_struct *task;

	if (targ_tgid && tgid != targ_tgid)
		return 0;
	kernel_version = LINUX_KERNEL_VERSION;
	task = (struct task_struct *)bpf_get_current_task();
	ev.pid = tgid;
	ev.ppid = BPF_CORE_READ(task, real_parent, tgid);
	ev.arg = (s64)ctx->args[1];
	bpf_get_current_comm(&ev.comm, sizeof(ev.comm));
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &ev, sizeof(ev));
	bpf_get_stackid(ctx, &stacks, 0);
	return 0;
}

static int count_wakeup(struct task_struct *p)
{
	u32 pid = BPF_CORE_READ(p, pid);
	u64 one = 1, *v = bpf_map_lookup_elem(&wakeups, &pid);
	if (v)
		__sync_fetch_and_add(v, 1);
	else
		bpf_map_update_elem(&wakeups, &pid, &one, BPF_ANY);
	return 0;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(sched_wakeup, struct task_struct *p)
{
	return count_wakeup(p);
}

SEC("raw_tp/sched_wakeup")
int BPF_PROG(sched_wakeup_raw, struct task_struct *p)
{
	return count_wakeup(p);
}

char LICENSE[] SEC("license") = "GPL";
