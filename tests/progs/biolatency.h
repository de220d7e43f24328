/* Block I/O latency per disk and request flags, the shape of libbpf-tools' biolatency. */
#ifndef __BIOLATENCY_H
#define __BIOLATENCY_H

#define MAX_SLOTS	27

struct hist_key {
	__u32 cmd_flags;
	__u32 dev;
};

struct hist {
	__u32 slots[MAX_SLOTS];
};

#endif /* __BIOLATENCY_H */
