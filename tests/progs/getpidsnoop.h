/* SPDX-License-Identifier: GPL-2.0 */
#ifndef __GETPIDSNOOP_H
#define __GETPIDSNOOP_H

#define TASK_COMM_LEN 16

/* 64 bytes: 72 with a ring buffer's header, 56 to a 4 KiB ring */
struct event {
	__u32 pid;
	__u32 ppid;
	__u64 seq;
	__u64 ts;
	char comm[TASK_COMM_LEN];
	__u64 pad[3];
};

#endif /* __GETPIDSNOOP_H */
