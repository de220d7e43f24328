// SPDX-License-Identifier: GPL-2.0
/* An opensnoop that reads the parent through CO-RE flavour structs (as tools do to
 * work across kernel versions), reserving each record through a local pointer. The
 * flavours are in the object's BTF (CO-RE relocations name them); the event is not. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "opensnoop.h"

struct task_struct___o {
	struct task_struct___o *real_parent;
	pid_t tgid;
} __attribute__((preserve_access_index));

struct task_struct___x {
	struct task_struct___x *parent;
	pid_t tgid;
} __attribute__((preserve_access_index));

const volatile pid_t targ_pid = 0;
__u64 seq = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 0); /* sized by the loader */
} events SEC(".maps");

static __always_inline pid_t parent_tgid(void)
{
	void *task = (void *)bpf_get_current_task();

	if (bpf_core_field_exists(((struct task_struct___o *)task)->real_parent))
		return BPF_CORE_READ((struct task_struct___o *)task, real_parent, tgid);
	return BPF_CORE_READ((struct task_struct___x *)task, parent, tgid);
}

SEC("tracepoint/syscalls/sys_enter_openat")
int trace_openat(struct trace_event_raw_sys_enter *ctx)
{
	struct event *e;
	pid_t pid = bpf_get_current_pid_tgid() >> 32;

	if (pid != targ_pid)
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	e->seq = __sync_fetch_and_add(&seq, 1);
	e->pid = pid;
	e->ppid = parent_tgid();
	e->flags = (int)ctx->args[2];
	e->has_parent = e->ppid != 0;
	e->exiting = 0;
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	bpf_probe_read_user_str(&e->fname, sizeof(e->fname), (const char *)ctx->args[1]);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
