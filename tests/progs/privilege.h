/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* What privilege.bpf.c counts, shared with the test that reads it. */
#ifndef __PRIVILEGE_H
#define __PRIVILEGE_H

/* getppid calls of one process, as seen by each hook family */
struct hits {
	unsigned long long tp_btf;
	unsigned long long raw_tp;
	unsigned long long tracepoint;
};

#endif /* __PRIVILEGE_H */
