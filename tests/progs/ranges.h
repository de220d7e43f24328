/* SPDX-License-Identifier: GPL-2.0 */
#ifndef __RANGES_H
#define __RANGES_H

#define TASK_COMM_LEN 16

enum level {
	LEVEL_LOW = 0,
	LEVEL_HIGH = 2,
};

/* Packed options as tools keep them: bitfields of an unsigned and a signed base. */
struct opts {
	__u32 mode : 3;
	__u32 verbose : 1;
	__s32 delta : 4;
	enum level level;
};

/* What the program saw: its configuration copied back, for round trips. */
struct seen {
	__u64 big;
	__u32 ubig;
	__s32 smin;
	__u8 small;
	char comm[TASK_COMM_LEN];
	struct opts opts;
};

#endif /* __RANGES_H */
