// SPDX-License-Identifier: GPL-2.0
/* execsnoop's way of packing strings into one record: each goes right after the
 * previous one, at the length the previous bpf_probe_read_user_str returned (an int,
 * checked before use). Built with -mcpu=v2, clang widens that int with a shift pair on
 * a copy, checks the copy and indexes with the original, which the verifier sees
 * unbounded ("R1 unbounded memory access"); with -mcpu=v3 (alu32) the check and the
 * index are the same 32-bit register, and it loads. tests/test_mcpu.py loads it. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "argpack.h"

struct task_struct___o {
	struct task_struct___o *real_parent;
	pid_t tgid;
} __attribute__((preserve_access_index));

const volatile pid_t targ_pid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 0); /* sized by the loader */
} events SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_openat")
int trace_openat(struct trace_event_raw_sys_enter *ctx)
{
	struct task_struct___o *task = (void *)bpf_get_current_task();
	pid_t pid = bpf_get_current_pid_tgid() >> 32;
	struct event *e;
	int ret;

	if (pid != targ_pid)
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	e->pid = pid;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	ret = bpf_probe_read_user_str(e->args, ARGSIZE, (const char *)ctx->args[1]);
	if (ret < 0 || ret > ARGSIZE) {
		bpf_ringbuf_discard(e, 0);
		return 0;
	}
	e->args_size = ret;
	bpf_get_current_comm(&e->args[e->args_size], TASK_COMM_LEN);
	e->args_size += TASK_COMM_LEN;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
