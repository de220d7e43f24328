/* Counters of fuzz_net.bpf.c, by protocol. */
#ifndef FUZZ_NET_H
#define FUZZ_NET_H

struct proto_count {
	__u64 packets;
	__u64 bytes;
};

#endif
