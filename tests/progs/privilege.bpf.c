// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* The getppid calls of one process (targ_tgid), counted by the three hook families a
 * tracing tool picks from: tp_btf and raw_tp (CAP_BPF + CAP_PERFMON suffice) and a
 * tracefs tracepoint (which also needs tracefs to be readable). The test loads one
 * program at a time, as an unprivileged user holding only those capabilities. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "privilege.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile u32 targ_tgid = 0;
const volatile long getppid_nr = 110; /* x86_64; the test sets it per architecture */

struct hits hits = {};

static __always_inline bool is_target(void)
{
	return (bpf_get_current_pid_tgid() >> 32) == targ_tgid;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(count_tp_btf, struct pt_regs *regs, long id)
{
	if (id == getppid_nr && is_target())
		__sync_fetch_and_add(&hits.tp_btf, 1);
	return 0;
}

SEC("raw_tp/sys_enter")
int count_raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
	if (ctx->args[1] == getppid_nr && is_target())
		__sync_fetch_and_add(&hits.raw_tp, 1);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int count_tracepoint(struct trace_event_raw_sys_enter *ctx)
{
	if (is_target())
		__sync_fetch_and_add(&hits.tracepoint, 1);
	return 0;
}
