// SPDX-License-Identifier: GPL-2.0
/* The first 64 bytes of each pwrite() of one process, three times over: with their
 * length beside them, with a count of strings (the pwrite offset) beside them, and
 * alone. The char-array rules of bpfnb/decode.py read each differently. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define DATA_MAX 64

struct write_rec {
	char data[DATA_MAX];
	__u32 data_len;
	char words[DATA_MAX];
	__u32 words_count;
	char plain[DATA_MAX];
};

const volatile __u32 target_tgid = 0;
__u32 seq = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct write_rec);
} writes SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_pwrite64")
int on_pwrite(struct trace_event_raw_sys_enter *ctx)
{
	struct write_rec rec = {};
	__u32 len = ctx->args[2], key;
	const void *buf = (const void *)ctx->args[1];

	if ((bpf_get_current_pid_tgid() >> 32) != target_tgid)
		return 0;
	if (len > DATA_MAX)
		len = DATA_MAX;
	if (bpf_probe_read_user(rec.data, len, buf))
		return 0;
	rec.data_len = len;
	__builtin_memcpy(rec.words, rec.data, DATA_MAX);
	rec.words_count = ctx->args[3];
	__builtin_memcpy(rec.plain, rec.data, DATA_MAX);
	key = __sync_fetch_and_add(&seq, 1);
	bpf_map_update_elem(&writes, &key, &rec, BPF_ANY);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
