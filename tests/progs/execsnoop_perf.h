/* SPDX-License-Identifier: GPL-2.0 */
/* execsnoop's event, shared with its user-space side. */
#ifndef __EXECSNOOP_H
#define __EXECSNOOP_H

#define TASK_COMM_LEN 16

struct event {
	pid_t pid;
	pid_t ppid;
	uid_t uid;
	int retval;
	char comm[TASK_COMM_LEN];
};

#endif /* __EXECSNOOP_H */
