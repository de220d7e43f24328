// SPDX-License-Identifier: GPL-2.0
/* What a recording holds, in one object: openat counted by pid in a hash map, each
 * openat as a ring buffer record, a global counter, and a log2 histogram of the
 * lengths of the opened paths. Only the target process is traced. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "bpfnb.h"
#include "recorded.h"

const volatile pid_t targ_pid = 0;
__u64 total = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 0); /* sized by the loader */
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 0); /* sized by the loader */
} events SEC(".maps");

BPFNB_HIST(name_len, 16);

SEC("tracepoint/syscalls/sys_enter_openat")
int trace_openat(struct trace_event_raw_sys_enter *ctx)
{
	struct event *e;
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	__u64 one = 1, *count;
	long len;

	if (pid != targ_pid)
		return 0;
	__sync_fetch_and_add(&total, 1);
	count = bpf_map_lookup_elem(&counts, &pid);
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bpf_map_update_elem(&counts, &pid, &one, BPF_ANY);
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	e->seq = total;
	e->pid = pid;
	e->flags = (int)ctx->args[2];
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	len = bpf_probe_read_user_str(&e->fname, sizeof(e->fname), (const char *)ctx->args[1]);
	bpf_ringbuf_submit(e, 0);
	if (len > 0)
		bpfnb_hist_log2(&name_len, len);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
