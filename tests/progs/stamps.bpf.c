// SPDX-License-Identifier: GPL-2.0
/* hardirqs/softirqs' shape: the entry's timestamp in a one-entry per-CPU array, the
 * latency of getppid() (of targ_tgid) counted in an array indexed by log2 slot. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "stamps.h"

const volatile pid_t targ_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_SLOTS);
	__type(key, u32);
	__type(value, u64);
} slots SEC(".maps");

static __always_inline bool mine(void)
{
	return bpf_get_current_pid_tgid() >> 32 == targ_tgid;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_enter(void *ctx)
{
	u32 zero = 0;
	u64 *ts;

	if (!mine())
		return 0;
	ts = bpf_map_lookup_elem(&start, &zero);
	if (ts)
		*ts = bpf_ktime_get_ns();
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_getppid")
int on_exit(void *ctx)
{
	u32 zero = 0, slot;
	u64 *ts, *count, delta;

	if (!mine())
		return 0;
	ts = bpf_map_lookup_elem(&start, &zero);
	if (!ts || !*ts)
		return 0;
	delta = bpf_ktime_get_ns() - *ts;
	*ts = 0;
	for (slot = 0; slot < MAX_SLOTS - 1 && (delta >> (slot + 1)); slot++)
		;
	count = bpf_map_lookup_elem(&slots, &slot);
	if (count)
		__sync_fetch_and_add(count, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
