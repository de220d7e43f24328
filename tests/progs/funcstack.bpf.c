// SPDX-License-Identifier: GPL-2.0
/* ksnoop's per-task function stack, on openat's enter and exit tracepoints: enter pushes
 * the file name pointer, exit pops it. The previous entry is read as ksnoop reads it,
 * ips[stack_depth - 1] with a __u8 depth checked first. Built with -mcpu=v3, clang
 * narrows the depth to 8 bits on a 32-bit copy, checks the copy and indexes with the
 * original ("R3 max value is outside of the allowed memory range"); with -mcpu=v2 the
 * narrowing, the check and the index are one register, and it loads (as ksnoop does).
 * tests/test_mcpu.py loads it. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "funcstack.h"

struct task_struct___o {
	struct task_struct___o *real_parent;
	pid_t tgid;
} __attribute__((preserve_access_index));

const volatile __u32 targ_tid = 0;
__u64 pushes = 0, pops = 0, nested = 0;
pid_t parent = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 0); /* sized by the loader */
	__type(key, __u64);
	__type(value, struct func_stack);
} func_stacks SEC(".maps");

static struct func_stack *stack_of(__u64 task)
{
	struct func_stack *s = bpf_map_lookup_elem(&func_stacks, &task);

	if (!s) {
		struct func_stack fresh = { .task = task };

		bpf_map_update_elem(&func_stacks, &task, &fresh, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&func_stacks, &task);
	}
	return s;
}

SEC("tracepoint/syscalls/sys_enter_openat")
int enter_openat(struct trace_event_raw_sys_enter *ctx)
{
	__u64 task = bpf_get_current_pid_tgid(), last_ip = 0;
	__u8 stack_depth, last_stack_depth;
	struct func_stack *s;

	if ((__u32)task != targ_tid)
		return 0;
	s = stack_of(task);
	if (!s)
		return 0;
	stack_depth = s->stack_depth;
	if (stack_depth >= FUNC_MAX_STACK_DEPTH - 1)
		return 0;
	/* the function we were called from, if any */
	last_stack_depth = stack_depth - 1;
	if (last_stack_depth >= 0 && last_stack_depth < FUNC_MAX_STACK_DEPTH)
		last_ip = s->ips[last_stack_depth];
	if (last_ip)
		__sync_fetch_and_add(&nested, 1);
	s->ips[stack_depth] = ctx->args[1];
	s->stack_depth = (stack_depth + 1) & FUNC_STACK_DEPTH_MASK;
	parent = BPF_CORE_READ((struct task_struct___o *)bpf_get_current_task(),
			       real_parent, tgid);
	__sync_fetch_and_add(&pushes, 1);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat")
int exit_openat(struct trace_event_raw_sys_exit *ctx)
{
	__u64 task = bpf_get_current_pid_tgid();
	struct func_stack *s;
	__u8 stack_depth;

	if ((__u32)task != targ_tid)
		return 0;
	s = bpf_map_lookup_elem(&func_stacks, &task);
	if (!s)
		return 0;
	stack_depth = s->stack_depth;
	if (stack_depth == 0 || stack_depth >= FUNC_MAX_STACK_DEPTH)
		return 0;
	stack_depth = (stack_depth - 1) & FUNC_STACK_DEPTH_MASK;
	if (s->ips[stack_depth])
		__sync_fetch_and_add(&pops, 1);
	s->stack_depth = stack_depth;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
