/* SPDX-License-Identifier: GPL-2.0 */
#ifndef __ARGPACK_H
#define __ARGPACK_H

#define TASK_COMM_LEN 16
#define ARGSIZE 128
#define ARGS_LEN (ARGSIZE + TASK_COMM_LEN)

struct event {
	__u32 pid;
	__u32 ppid;
	__u32 args_size;	/* bytes of args used: the file name and its NUL, then comm */
	__u8 args[ARGS_LEN];	/* strings packed one after another, as execsnoop does */
};

#endif /* __ARGPACK_H */
