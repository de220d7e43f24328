// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* XDP: count the IPv4 UDP packets arriving on an interface by destination port (ports
 * from port_lo to port_hi), their sizes as a log2 histogram, and an event each; every packet passes. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "fleetcount.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define ETH_P_IP 0x0800
#define MAX_SLOTS 16

const volatile __u16 port_lo = 0;
const volatile __u16 port_hi = 0;

__u64 udp_packets = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 0);		/* sized at load */
	__type(key, struct port_key);
	__type(value, __u64);
} packets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} sizes SEC(".maps");

static __always_inline __u32 log2_slot(__u32 v)
{
	__u32 slot = 0;

	for (int i = 0; i < MAX_SLOTS - 1 && v > 1; i++) {
		v >>= 1;
		slot++;
	}
	return slot;
}

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 0);		/* sized at load */
} events SEC(".maps");

SEC("xdp")
int fleet_count(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct port_key key = {};
	struct event *e;
	struct iphdr *ip;
	struct udphdr *udp;
	__u64 one = 1, *count;
	__u32 slot;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || ip->protocol != IPPROTO_UDP || ip->ihl != 5)
		return XDP_PASS;
	udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > data_end)
		return XDP_PASS;
	key.dport = bpf_ntohs(udp->dest);
	if (key.dport < port_lo || key.dport > port_hi)
		return XDP_PASS;
	count = bpf_map_lookup_elem(&packets, &key);
	if (count) {
		__sync_fetch_and_add(count, 1);
	} else if (bpf_map_update_elem(&packets, &key, &one, BPF_NOEXIST)) {
		/* another CPU inserted it first: count on its entry */
		count = bpf_map_lookup_elem(&packets, &key);
		if (count)
			__sync_fetch_and_add(count, 1);
	}
	__sync_fetch_and_add(&udp_packets, 1);
	slot = log2_slot(bpf_ntohs(udp->len));
	count = bpf_map_lookup_elem(&sizes, &slot);
	if (count)
		__sync_fetch_and_add(count, 1);
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (e) {
		e->dport = key.dport;
		e->len = bpf_ntohs(udp->len);
		e->ifindex = ctx->ingress_ifindex;
		bpf_ringbuf_submit(e, 0);
	}
	return XDP_PASS;
}
