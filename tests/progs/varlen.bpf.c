// SPDX-License-Identifier: GPL-2.0
/* Each lseek of the target process with the whence below, as a ring buffer record of
 * varying size: its tail is as long as the lseek's offset asks (at most MAX_TAIL), the
 * event built in a per-CPU heap and sent with bpf_ringbuf_output, as tools sending
 * strings of varying length do (libbpf-tools execsnoop's EVENT_SIZE). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "varlen.h"

#define MARK_WHENCE 0x5eec

const volatile pid_t targ_pid = 0;
__u64 seq = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 0); /* sized by the loader */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct event);
} heap SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_lseek")
int trace_lseek(struct trace_event_raw_sys_enter *ctx)
{
	struct event *e;
	__u32 zero = 0, len;
	int i;

	if ((bpf_get_current_pid_tgid() >> 32) != targ_pid || ctx->args[2] != MARK_WHENCE)
		return 0;
	e = bpf_map_lookup_elem(&heap, &zero);
	if (!e)
		return 0;
	len = (__u32)ctx->args[1];
	if (len > MAX_TAIL)
		len = MAX_TAIL;
	e->seq = __sync_fetch_and_add(&seq, 1);
	e->pid = targ_pid;
	e->len = len;
	for (i = 0; i < MAX_TAIL; i++)
		e->tail[i] = (__u8)(e->seq + i);
	bpf_ringbuf_output(&events, e, EVENT_SIZE(len), 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
