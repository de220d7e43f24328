// SPDX-License-Identifier: GPL-2.0
/* Each lseek of the target process with the whence below, as a ring buffer record. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "seeks.h"

#define MARK_WHENCE 0x5eec

const volatile pid_t targ_pid = 0;
__u64 seq = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 0); /* sized by the loader */
} events SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_lseek")
int trace_lseek(struct trace_event_raw_sys_enter *ctx)
{
	struct event *e;

	if ((bpf_get_current_pid_tgid() >> 32) != targ_pid || ctx->args[2] != MARK_WHENCE)
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	e->seq = __sync_fetch_and_add(&seq, 1);
	e->ts = bpf_ktime_get_ns();
	e->pid = targ_pid;
	e->fd = (int)ctx->args[0];
	e->offset = (long)ctx->args[1];
	e->cpu = bpf_get_smp_processor_id();
	e->whence = (__u8)ctx->args[2];
	bpf_ringbuf_submit(e, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
