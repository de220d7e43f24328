/* Events of semantic.bpf.c: every field that means more than a number is declared
 * with a bpfnb.h semantic type, so the DataFrame shows names, addresses and times. */
#ifndef __SEMANTIC_H
#define __SEMANTIC_H

enum hook { HOOK_CONNECT = 1, HOOK_OPENAT = 2, HOOK_SIGNAL = 3 };

struct event {
	bpfnb_ktime_t ts;
	bpfnb_cgroup_t cgroup;
	bpfnb_errno_t ret;
	__u32 pid;
	enum hook hook;
	bpfnb_signal_t sig;
	__u16 family;
	bpfnb_port_t dport;
	bpfnb_ipv4_t daddr;
	bpfnb_ipv6_t daddr6;
};

#endif /* __SEMANTIC_H */
