/* SPDX-License-Identifier: GPL-2.0 */
/* Two kinds of records that share one ring buffer. */
#ifndef __PROCS_H
#define __PROCS_H

struct exec_event {
	__u32 pid;
	__u32 ppid;
	char comm[16];
};

struct exit_event {
	__u32 pid;
	__u32 ppid;
	__u64 lifetime_ns;
	int exit_code;
	char comm[16];
};

#endif /* __PROCS_H */
