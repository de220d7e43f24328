/* What the compile-cache tests count: one tally per thread. */
#ifndef __TALLY_H
#define __TALLY_H

#define MAX_THREADS 64

struct tally {
	__u64 calls;
	__s64 last_arg;	/* the syscall's argument the program records */
};

#endif /* __TALLY_H */
