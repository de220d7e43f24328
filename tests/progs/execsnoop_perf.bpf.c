// SPDX-License-Identifier: GPL-2.0
/* An execsnoop in the style of libbpf-tools: one event per successful execve of a
 * child of targ_ppid, built on the stack and sent through a perf buffer. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "execsnoop_perf.h"

const volatile pid_t targ_ppid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(u32));
	__uint(value_size, sizeof(u32));
} events SEC(".maps");

SEC("tracepoint/syscalls/sys_exit_execve")
int tracepoint__syscalls__sys_exit_execve(struct trace_event_raw_sys_exit *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct event event = {};

	event.ppid = BPF_CORE_READ(task, real_parent, tgid);
	if (targ_ppid && event.ppid != targ_ppid)
		return 0;
	event.pid = bpf_get_current_pid_tgid() >> 32;
	event.uid = (u32)bpf_get_current_uid_gid();
	event.retval = ctx->ret;
	bpf_get_current_comm(&event.comm, sizeof(event.comm));
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &event, sizeof(event));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
