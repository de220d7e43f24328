/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* What fleetppid.bpf.c counts: getppid calls by process. */
#ifndef FLEETPPID_H
#define FLEETPPID_H

struct proc_key {
	__u32 tgid;
};

#endif
