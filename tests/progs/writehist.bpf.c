// SPDX-License-Identifier: GPL-2.0
/* cpufreq's linear histogram (value / HIST_STEP_SIZE, clamped to the last slot), of
 * write(2) sizes: system-wide in .bss and per command in a hash. Built with -mcpu=v3,
 * clang divides and checks the 32-bit size in a w register; after the 32-bit division
 * the verifier no longer knows the upper half is zero, so the check bounds w7 and not
 * the 64-bit index ("math between map_value pointer and register with unbounded min
 * value is not allowed"); with -mcpu=v2 it is one 64-bit register, and it loads (as
 * cpufreq does). tests/test_mcpu.py loads it. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "writehist.h"

struct task_struct___o {
	struct task_struct___o *real_parent;
	pid_t tgid;
} __attribute__((preserve_access_index));

const volatile __u32 targ_tid = 0;
struct hist syswide = {};
pid_t parent = 0;
static struct hist zero;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ENTRIES);
	__type(key, struct hkey);
	__type(value, struct hist);
} hists SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_write")
int write_size(struct trace_event_raw_sys_enter *ctx)
{
	__u32 size = ctx->args[2];
	struct hkey hkey = {};
	struct hist *hist;
	__u64 slot;

	if ((__u32)bpf_get_current_pid_tgid() != targ_tid || !size)
		return 0;
	slot = size / HIST_STEP_SIZE;
	if (slot >= MAX_SLOTS)
		slot = MAX_SLOTS - 1;
	__sync_fetch_and_add(&syswide.slots[slot], 1);
	parent = BPF_CORE_READ((struct task_struct___o *)bpf_get_current_task(),
			       real_parent, tgid);
	bpf_get_current_comm(&hkey.comm, sizeof(hkey.comm));
	hist = bpf_map_lookup_elem(&hists, &hkey);
	if (!hist) {
		bpf_map_update_elem(&hists, &hkey, &zero, BPF_NOEXIST);
		hist = bpf_map_lookup_elem(&hists, &hkey);
		if (!hist)
			return 0;
	}
	__sync_fetch_and_add(&hist->slots[slot], 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
