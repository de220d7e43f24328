/* Shared between btfzoo.bpf.c and its user side, the way libbpf-tools keep their
 * event structs in a header: every kind of member BTF can describe. */
#ifndef BTFZOO_H
#define BTFZOO_H

#define TASK_COMM_LEN 16
#define MAX_SLOTS 8

enum zoo_state { ZOO_IDLE, ZOO_RUN = 5, ZOO_DEAD = 100 };
enum zoo_wide { ZOO_SMALL = 1, ZOO_HUGE = 0x123456789aLL, ZOO_NEG = -7 };

struct zoo_inner {
	__u16 a;
	__u64 b;
};

struct zoo_flags {
	__u32 kind:3;
	__u32 prio:5;
	int delta:4;
	enum zoo_state st:8;
	__u64 big:40;
	__u8 tail;
};

typedef __u32 zoo_slots_t[MAX_SLOTS];

struct event {
	__u32 pid;
	__s32 ret;
	char comm[TASK_COMM_LEN];
	enum zoo_state st;
	struct zoo_inner in;
	union {
		__u32 as_u32;
		__u8 bytes[4];
	};
	struct zoo_flags flags;
	zoo_slots_t slots;
	int grid[2][3];
	void *ptr;
	const char *name;
	int (*cb)(int, const char *);
	float f;
	double d;
	enum zoo_wide wide;
	__u8 mac[6];
	unsigned char uc[4];
	__u64 ts;
};

struct zoo_packed {
	__u8 a;
	__u32 b;
} __attribute__((packed));

struct zoo_flex {
	__u32 len;
	char data[];
};

#endif
