/* SPDX-License-Identifier: GPL-2.0 */
#ifndef __WRITEHIST_H
#define __WRITEHIST_H

#define MAX_ENTRIES	1024
#define MAX_SLOTS	26
#define TASK_COMM_LEN	16
#define HIST_STEP_SIZE	200	/* bytes per slot: a linear histogram, as cpufreq's */

struct hkey {
	char comm[TASK_COMM_LEN];
};

struct hist {
	__u32 slots[MAX_SLOTS];
};

#endif /* __WRITEHIST_H */
