// SPDX-License-Identifier: GPL-2.0
/* libbpf-tools' profile.bpf.c, cut to one process: count stacks per sample. The stack
 * map has no size here: the loader sizes it (libbpf-tools sets value_size to
 * perf_max_stack_depth * 8 and max_entries to stack_storage_size). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "profile.h"
#include "maps.bpf.h"

const volatile pid_t targ_pid = -1;

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__type(key, u32);
} stackmap SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct key_t);
	__type(value, u64);
	__uint(max_entries, MAX_ENTRIES);
} counts SEC(".maps");

SEC("perf_event")
int do_perf_event(struct bpf_perf_event_data *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 pid = id >> 32;
	struct key_t key = {};
	static const u64 zero;
	u64 *valp;

	if (targ_pid != -1 && targ_pid != pid)
		return 0;
	key.pid = pid;
	bpf_get_current_comm(&key.name, sizeof(key.name));
	key.user_stack_id = bpf_get_stackid(&ctx->regs, &stackmap, BPF_F_USER_STACK);
	key.kern_stack_id = bpf_get_stackid(&ctx->regs, &stackmap, 0);
	valp = bpf_map_lookup_or_try_init(&counts, &key, &zero);
	if (valp)
		__sync_fetch_and_add(valp, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
