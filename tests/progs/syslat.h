/* lseek calls of marked processes: latency per process, the offsets they asked for,
 * and counts by process. */
#ifndef __SYSLAT_H
#define __SYSLAT_H

#define TASK_COMM_LEN	16
#define MAX_SLOTS	32

struct hist {
	__u32 slots[MAX_SLOTS];
	char comm[TASK_COMM_LEN];
};

struct offset_hist {
	__u64 slots[MAX_SLOTS];
};

struct who {
	__u32 pid;
	char comm[TASK_COMM_LEN];
};

#endif /* __SYSLAT_H */
