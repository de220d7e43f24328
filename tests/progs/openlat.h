/* openat latency by file name, in the shape of libbpf-tools' hardirqs (a name key,
 * an info value with a count, time totals and the slots). */
#ifndef __OPENLAT_H
#define __OPENLAT_H

#define NAME_LEN	32
#define MAX_SLOTS	20

struct name_key {
	char name[NAME_LEN];
};

struct info {
	__u64 count;
	__u64 total_time;
	__u64 max_time;
	__u32 slots[MAX_SLOTS];
};

#endif /* __OPENLAT_H */
