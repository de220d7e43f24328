/* On-CPU time per process and per CPU, the shape of libbpf-tools' cpudist. */
#ifndef __CPUDIST_H
#define __CPUDIST_H

#define TASK_COMM_LEN	16
#define MAX_SLOTS	36

struct hist {
	__u32 slots[MAX_SLOTS];
	char comm[TASK_COMM_LEN];
};

#endif /* __CPUDIST_H */
