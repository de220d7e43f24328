/* Keys and values of fuzz_maps.bpf.c. */
#ifndef FUZZ_MAPS_H
#define FUZZ_MAPS_H

struct task_key {
	__u32 pid;
	__u32 cpu;
};

struct task_stat {
	__u64 calls;
	__u64 last_ns;
	char comm[16];
};

#endif
