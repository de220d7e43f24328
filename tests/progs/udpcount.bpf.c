// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* XDP: count the IPv4 UDP packets to one port (targ_port) arriving on an interface,
 * passing every packet on. Bounds are checked before each header is read. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define ETH_P_IP 0x0800

const volatile u16 targ_port = 0;

u64 udp_packets = 0;

SEC("xdp")
int count_udp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct udphdr *udp;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || ip->protocol != IPPROTO_UDP || ip->ihl != 5)
		return XDP_PASS;
	udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > data_end)
		return XDP_PASS;
	if (udp->dest == bpf_htons(targ_port))
		__sync_fetch_and_add(&udp_packets, 1);
	return XDP_PASS;
}
