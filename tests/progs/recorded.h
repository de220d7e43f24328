/* SPDX-License-Identifier: GPL-2.0 */
#ifndef __RECORDED_H
#define __RECORDED_H

#define TASK_COMM_LEN 16
#define NAME_LEN 64

struct event {
	__u64 seq;
	__u32 pid;
	int flags;
	char comm[TASK_COMM_LEN];
	char fname[NAME_LEN];
};

#endif /* __RECORDED_H */
