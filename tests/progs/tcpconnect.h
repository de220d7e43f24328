/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Flow keys of libbpf-tools' tcpconnect (count mode): addresses and the port as the
 * socket holds them, in network byte order, with no bpfnb.h types. */
#ifndef __TCPCONNECT_H
#define __TCPCONNECT_H

struct ipv4_flow_key {
	__u32 saddr;
	__u32 daddr;
	__u16 dport;
};

struct ipv6_flow_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 dport;
};

#endif /* __TCPCONNECT_H */
