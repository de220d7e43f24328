/* Counts close(2) calls of one thread and keeps the fd of the last one.
 * Compiled as a cell (the prelude gives vmlinux.h and the libbpf helpers). */
#include "tally.h"

const volatile u32 target_tid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_THREADS);
	__type(key, u32);
	__type(value, struct tally);
} tallies SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_close")
int count_close(struct trace_event_raw_sys_enter *ctx)
{
	static const struct tally zero = {};
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct tally *t;

	if (tid != target_tid)
		return 0;
	t = bpf_map_lookup_elem(&tallies, &tid);
	if (!t) {
		bpf_map_update_elem(&tallies, &tid, &zero, BPF_NOEXIST);
		t = bpf_map_lookup_elem(&tallies, &tid);
		if (!t)
			return 0;
	}
	__sync_fetch_and_add(&t->calls, 1);
	t->last_arg = ctx->args[0];
	return 0;
}
