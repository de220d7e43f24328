// SPDX-License-Identifier: GPL-2.0
/* Exec records reserved in the ring, exit records built on the stack and copied in:
 * two record types in one buffer, as some tools do (with a leading kind field). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "procs.h"

const volatile pid_t targ_ppid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} procs SEC(".maps");

static __always_inline pid_t parent(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	return BPF_CORE_READ(task, real_parent, tgid);
}

SEC("tp/sched/sched_process_exec")
int on_exec(void *ctx)
{
	pid_t ppid = parent();
	struct exec_event *e;

	if (ppid != targ_ppid)
		return 0;
	e = bpf_ringbuf_reserve(&procs, sizeof(*e), 0);
	if (!e)
		return 0;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->ppid = ppid;
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tp/sched/sched_process_exit")
int on_exit(void *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	pid_t ppid = parent();
	struct exit_event x = {};
	u64 id = bpf_get_current_pid_tgid();

	if (ppid != targ_ppid || (u32)id != id >> 32)
		return 0;
	x.pid = id >> 32;
	x.ppid = ppid;
	x.lifetime_ns = bpf_ktime_get_ns() - BPF_CORE_READ(task, start_time);
	x.exit_code = (BPF_CORE_READ(task, exit_code) >> 8) & 0xff;
	bpf_get_current_comm(&x.comm, sizeof(x.comm));
	bpf_ringbuf_output(&procs, &x, sizeof(x), 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
