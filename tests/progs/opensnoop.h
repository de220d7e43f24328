/* SPDX-License-Identifier: GPL-2.0 */
#ifndef __OPENSNOOP_H
#define __OPENSNOOP_H

#define TASK_COMM_LEN 16
#define NAME_LEN 64

struct event {
	__u64 seq;
	__u32 pid;
	__u32 ppid;
	int flags;
	unsigned int has_parent : 1;
	unsigned int exiting : 1;
	char comm[TASK_COMM_LEN];
	char fname[NAME_LEN];
};

#endif /* __OPENSNOOP_H */
