/* SPDX-License-Identifier: GPL-2.0 */
#ifndef __VARLEN_H
#define __VARLEN_H

#define MAX_TAIL 64

/* A record as long as its tail: EVENT_SIZE(len) bytes leave the program. */
struct event {
	__u64 seq;
	__u32 pid;
	__u32 len;
	__u8 tail[MAX_TAIL];
};

#define EVENT_SIZE(len) (__builtin_offsetof(struct event, tail) + (len))

#endif /* __VARLEN_H */
