// SPDX-License-Identifier: GPL-2.0
/* libbpf-tools' tcpconnect in count mode, on the tp_btf inet_sock_set_state hook (this
 * kernel has no kprobes): each socket going CLOSE -> SYN_SENT counts its flow. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "tcpconnect.h"

#define AF_INET 2
#define AF_INET6 10
#define MAX_ENTRIES 8192

const volatile pid_t filter_pid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ENTRIES);
	__type(key, struct ipv4_flow_key);
	__type(value, u64);
} ipv4_count SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ENTRIES);
	__type(key, struct ipv6_flow_key);
	__type(value, u64);
} ipv6_count SEC(".maps");

static __always_inline void count(void *map, void *key)
{
	static const u64 zero;
	u64 *val = bpf_map_lookup_elem(map, key);

	if (!val) {
		bpf_map_update_elem(map, key, &zero, BPF_NOEXIST);
		val = bpf_map_lookup_elem(map, key);
		if (!val)
			return;
	}
	__atomic_add_fetch(val, 1, __ATOMIC_RELAXED);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tcp_connect, struct sock *sk, int oldstate, int newstate)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	if (oldstate != TCP_CLOSE || newstate != TCP_SYN_SENT)
		return 0;
	if (filter_pid && tgid != filter_pid)
		return 0;
	if (family == AF_INET) {
		struct ipv4_flow_key key = {};

		key.saddr = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		key.daddr = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		key.dport = BPF_CORE_READ(sk, __sk_common.skc_dport);
		count(&ipv4_count, &key);
	} else if (family == AF_INET6) {
		struct ipv6_flow_key key = {};

		BPF_CORE_READ_INTO(&key.saddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&key.daddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
		key.dport = BPF_CORE_READ(sk, __sk_common.skc_dport);
		count(&ipv6_count, &key);
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
