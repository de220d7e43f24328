// SPDX-License-Identifier: GPL-2.0
/* Written against libbpf >= 1.3 headers: BPF_UPROBE, bpf_ksym_exists, bpf_for and
 * bpf_core_cast, none of which libbpf 1.1.2's headers define. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

extern struct task_struct *bpf_task_from_pid(s32 pid) __ksym __weak;
extern void bpfnb_no_such_kfunc(void) __ksym __weak;

const volatile pid_t targ_tgid = 0;

__u64 getpid_calls;
__u64 loop_sum;
int has_task_from_pid = -1;
int has_no_such_kfunc = -1;
pid_t seen_tgid;

SEC("uprobe/libc.so.6:getpid")
int BPF_UPROBE(on_getpid)
{
	if (bpf_get_current_pid_tgid() >> 32 == targ_tgid)
		__sync_fetch_and_add(&getpid_calls, 1);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(struct trace_event_raw_sys_enter *ctx)
{
	struct task_struct *task;
	int i;

	if (bpf_get_current_pid_tgid() >> 32 != targ_tgid)
		return 0;
	bpf_for(i, 0, 10)
		loop_sum += i;
	has_task_from_pid = bpf_ksym_exists(bpf_task_from_pid);
	has_no_such_kfunc = bpf_ksym_exists(bpfnb_no_such_kfunc);
	task = bpf_core_cast((void *)bpf_get_current_task(), struct task_struct);
	seen_tgid = task->tgid;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
