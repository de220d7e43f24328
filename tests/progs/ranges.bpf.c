// SPDX-License-Identifier: GPL-2.0
/* Configuration at the edges of its types: the loader sets .rodata, the program copies
 * it into a map on the test's own openat calls, so each value makes a kernel round trip.
 * A socket filter for the attach_socket checks. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "ranges.h"

const volatile pid_t targ_pid = 0;
const volatile __u8 small = 0;
const volatile __u32 ubig = 0;
const volatile __s32 smin = 0;
const volatile __u64 big = 0;
const volatile bool enabled = false;
const volatile char comm[TASK_COMM_LEN] = {};
struct opts opts = {};
__u64 hits = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 0); /* sized by the loader */
	__type(key, __u32);
	__type(value, struct seen);
} seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __s64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} per_cpu SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_openat")
int on_openat(struct trace_event_raw_sys_enter *ctx)
{
	struct seen s = {};
	__u32 key = 0;

	if (!enabled || (bpf_get_current_pid_tgid() >> 32) != targ_pid)
		return 0;
	__sync_fetch_and_add(&hits, 1);
	s.big = big;
	s.ubig = ubig;
	s.smin = smin;
	s.small = small;
	/* element by element: through a memcpy clang folds in the initializer */
	for (int i = 0; i < TASK_COMM_LEN; i++)
		s.comm[i] = comm[i];
	s.opts = opts;
	bpf_map_update_elem(&seen, &key, &s, BPF_ANY);
	return 0;
}

SEC("socket")
int keep_all(struct __sk_buff *skb)
{
	return skb->len;
}

char LICENSE[] SEC("license") = "GPL";
