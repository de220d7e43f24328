/* Shared by opensnoop_mixed.bpf.c and its reader (libbpf-tools style). */
#ifndef __OPENSNOOP_MIXED_H
#define __OPENSNOOP_MIXED_H

#define TASK_COMM_LEN 16
#define NAME_MAX 255

struct event {
	__u32 pid;
	__s32 flags;
	__u32 hook;		/* enum hook_kind: which program saw the open */
	char comm[TASK_COMM_LEN];
	char fname[NAME_MAX];
};

enum hook_kind {
	HOOK_TRACEPOINT = 1,
	HOOK_KPROBE = 2,
	HOOK_FENTRY = 3,
};

#endif /* __OPENSNOOP_MIXED_H */
