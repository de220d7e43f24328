/* SPDX-License-Identifier: GPL-2.0 */
#ifndef __SEEKS_H
#define __SEEKS_H

/* Only numbers: a recording writes such records straight from their bytes. */
struct event {
	__u64 seq;
	__u64 ts;
	__u32 pid;
	__s32 fd;
	__s64 offset;
	__u16 cpu;
	__u8 whence;
};

#endif /* __SEEKS_H */
