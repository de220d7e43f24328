/* SPDX-License-Identifier: GPL-2.0 */
#ifndef __KFUNCSNOOP_H
#define __KFUNCSNOOP_H

#define TASK_COMM_LEN 16

/* uapi-style typedefs: __be32 and __be16 stand on __u32 and __u16, which the
 * object's BTF has (the map key) while the event itself is only in DWARF */
struct event {
	__u32 pid;
	__u32 seq;
	__be32 addr;
	__be16 port;
	char comm[TASK_COMM_LEN];
};

#endif /* __KFUNCSNOOP_H */
