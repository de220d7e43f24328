// SPDX-License-Identifier: GPL-2.0
/* lseek with the marker whence (an invalid one: the call fails, after the tracepoint
 * saw it), so only the test's own calls count: their latency in nanoseconds per
 * process (a hash of struct hist with comm), the offsets asked for (a per-CPU array
 * of one u64-slot histogram), and plain counters by pid and by {pid, comm}. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "syslat.h"
#include "bits.bpf.h"
#include "maps.bpf.h"

const volatile int targ_whence = 77;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 0); /* sized by the loader */
	__type(key, u32);
	__type(value, u64);
} start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 0); /* sized by the loader */
	__type(key, u32);
	__type(value, struct hist);
} hists SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct offset_hist);
} offsets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 0); /* sized by the loader */
	__type(key, u32);
	__type(value, u64);
} calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 0); /* sized by the loader */
	__type(key, struct who);
	__type(value, u64);
} by_who SEC(".maps");

static struct hist zero;

SEC("tracepoint/syscalls/sys_enter_lseek")
int handle_enter(struct trace_event_raw_sys_enter *ctx)
{
	u64 id = bpf_get_current_pid_tgid(), ts, slot, one = 1, *count;
	struct offset_hist *oh;
	struct who w = {};
	u32 tid = id, pid = id >> 32, key = 0;

	if ((int)ctx->args[2] != targ_whence)
		return 0;
	ts = bpf_ktime_get_ns();
	bpf_map_update_elem(&start, &tid, &ts, BPF_ANY);

	oh = bpf_map_lookup_elem(&offsets, &key);
	if (oh) {
		slot = log2l(ctx->args[1]);
		if (slot >= MAX_SLOTS)
			slot = MAX_SLOTS - 1;
		oh->slots[slot] += 1; /* per-CPU: no other writer */
	}

	count = bpf_map_lookup_or_try_init(&calls, &pid, &(u64){0});
	if (count)
		__sync_fetch_and_add(count, one);
	w.pid = pid;
	bpf_get_current_comm(&w.comm, sizeof(w.comm));
	count = bpf_map_lookup_or_try_init(&by_who, &w, &(u64){0});
	if (count)
		__sync_fetch_and_add(count, one);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_lseek")
int handle_exit(struct trace_event_raw_sys_exit *ctx)
{
	u64 id = bpf_get_current_pid_tgid(), *tsp, slot;
	u32 tid = id, pid = id >> 32;
	struct hist *histp;

	tsp = bpf_map_lookup_elem(&start, &tid);
	if (!tsp)
		return 0;
	histp = bpf_map_lookup_or_try_init(&hists, &pid, &zero);
	if (histp) {
		if (!histp->comm[0])
			bpf_get_current_comm(&histp->comm, sizeof(histp->comm));
		slot = log2l(bpf_ktime_get_ns() - *tsp);
		if (slot >= MAX_SLOTS)
			slot = MAX_SLOTS - 1;
		__sync_fetch_and_add(&histp->slots[slot], 1);
	}
	bpf_map_delete_elem(&start, &tid);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
