// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* tp_btf: getppid calls by process (tgid). CAP_BPF and CAP_PERFMON suffice, so an
 * engine started with only those runs it; the fleet tests make each engine call
 * getppid a known number of times and look for its own pid. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "fleetppid.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile long getppid_nr = 110; /* x86_64; the test sets it per architecture */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 0);		/* sized at load */
	__type(key, struct proc_key);
	__type(value, __u64);
} calls SEC(".maps");

SEC("tp_btf/sys_enter")
int BPF_PROG(fleet_ppid, struct pt_regs *regs, long id)
{
	struct proc_key key = { .tgid = bpf_get_current_pid_tgid() >> 32 };
	__u64 one = 1, *n;

	if (id != getppid_nr)
		return 0;
	n = bpf_map_lookup_elem(&calls, &key);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		bpf_map_update_elem(&calls, &key, &one, BPF_NOEXIST);
	return 0;
}
