// SPDX-License-Identifier: GPL-2.0
/* An XDP and a tc program counting packets by IP protocol (the shape of xdp-tutorial's
 * packet counters), with bounds checks before every header read. The fuzz test mutates
 * it. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "fuzz_net.h"

#define ETH_P_IP 0x0800
#define TC_ACT_OK 0

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 256);
	__type(key, u8);
	__type(value, struct proto_count);
} by_proto SEC(".maps");

const volatile u8 drop_proto = 0;
u64 xdp_seen = 0, tc_seen = 0;

static __always_inline int count(void *data, void *data_end, u64 len)
{
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct proto_count zero = {}, *c;
	u8 proto;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return -1;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return -1;
	proto = ip->protocol;
	c = bpf_map_lookup_elem(&by_proto, &proto);
	if (!c) {
		bpf_map_update_elem(&by_proto, &proto, &zero, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&by_proto, &proto);
		if (!c)
			return -1;
	}
	c->packets++;
	c->bytes += len;
	return proto;
}

SEC("xdp")
int xdp_count(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	int proto = count(data, data_end, data_end - data);

	__sync_fetch_and_add(&xdp_seen, 1);
	return drop_proto && proto == drop_proto ? XDP_DROP : XDP_PASS;
}

SEC("tc")
int tc_count(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;

	count(data, data_end, skb->len);
	__sync_fetch_and_add(&tc_seen, 1);
	return TC_ACT_OK;
}
