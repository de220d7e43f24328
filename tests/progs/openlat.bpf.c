// SPDX-License-Identifier: GPL-2.0
/* openat latency in microseconds by the name the caller passed, for one process:
 * hardirqs' map shape (struct irq_key { char name[32]; } -> struct info) over
 * syscalls the caller makes, so that every count is known. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "openlat.h"
#include "bits.bpf.h"
#include "maps.bpf.h"

const volatile pid_t targ_tgid = 0;

struct pending {
	u64 ts;
	struct name_key key;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 0); /* sized by the loader */
	__type(key, u32);
	__type(value, struct pending);
} start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 0); /* sized by the loader */
	__type(key, struct name_key);
	__type(value, struct info);
} infos SEC(".maps");

static struct info zero;

SEC("tracepoint/syscalls/sys_enter_openat")
int handle_enter(struct trace_event_raw_sys_enter *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tid = id;
	struct pending p = {};

	if (targ_tgid && (id >> 32) != targ_tgid)
		return 0;
	p.ts = bpf_ktime_get_ns();
	bpf_probe_read_user_str(&p.key.name, sizeof(p.key.name), (void *)ctx->args[1]);
	bpf_map_update_elem(&start, &tid, &p, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat")
int handle_exit(struct trace_event_raw_sys_exit *ctx)
{
	u32 tid = bpf_get_current_pid_tgid();
	struct pending *p = bpf_map_lookup_elem(&start, &tid);
	struct info *info;
	u64 delta, slot;

	if (!p)
		return 0;
	delta = (bpf_ktime_get_ns() - p->ts) / 1000U;
	info = bpf_map_lookup_or_try_init(&infos, &p->key, &zero);
	if (info) {
		__sync_fetch_and_add(&info->count, 1);
		__sync_fetch_and_add(&info->total_time, delta);
		if (delta > info->max_time)
			info->max_time = delta;
		slot = log2l(delta);
		if (slot >= MAX_SLOTS)
			slot = MAX_SLOTS - 1;
		__sync_fetch_and_add(&info->slots[slot], 1);
	}
	bpf_map_delete_elem(&start, &tid);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
