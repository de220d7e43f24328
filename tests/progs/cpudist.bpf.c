// SPDX-License-Identifier: GPL-2.0
/* How long a process runs on a CPU before it switches out, in microseconds: one log2
 * histogram per process (hists, a hash) and one per CPU (cpu_hists, an array indexed
 * by CPU and sized by the loader to the number of CPUs), as libbpf-tools' cpudist. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "cpudist.h"
#include "bits.bpf.h"
#include "maps.bpf.h"

const volatile pid_t targ_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 0); /* sized by the loader */
	__type(key, u32);
	__type(value, u64);
} start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 0); /* sized by the loader */
	__type(key, u32);
	__type(value, struct hist);
} hists SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 0); /* sized by the loader: one per CPU */
	__type(key, u32);
	__type(value, struct hist);
} cpu_hists SEC(".maps");

static struct hist initial_hist;

static __always_inline void store_start(u32 tgid, u32 pid, u64 ts)
{
	if (targ_tgid && targ_tgid != tgid)
		return;
	bpf_map_update_elem(&start, &pid, &ts, BPF_ANY);
}

static __always_inline void add_slot(struct hist *histp, u64 slot)
{
	if (slot >= MAX_SLOTS)
		slot = MAX_SLOTS - 1;
	__sync_fetch_and_add(&histp->slots[slot], 1);
}

static __always_inline void update_hist(struct task_struct *task, u32 tgid, u32 pid, u64 ts)
{
	u32 cpu = bpf_get_smp_processor_id();
	struct hist *histp;
	u64 *tsp, slot;
	s64 delta;

	if (targ_tgid && targ_tgid != tgid)
		return;
	tsp = bpf_map_lookup_elem(&start, &pid);
	if (!tsp || ts < *tsp)
		return;
	delta = (ts - *tsp) / 1000U;
	slot = log2l(delta);

	histp = bpf_map_lookup_or_try_init(&hists, &tgid, &initial_hist);
	if (!histp)
		return;
	if (!histp->comm[0])
		bpf_probe_read_kernel_str(&histp->comm, sizeof(histp->comm), task->comm);
	add_slot(histp, slot);

	histp = bpf_map_lookup_elem(&cpu_hists, &cpu);
	if (!histp)
		return;
	if (!histp->comm[0])
		bpf_probe_read_kernel_str(&histp->comm, sizeof(histp->comm), task->comm);
	add_slot(histp, slot);
}

SEC("tp_btf/sched_switch")
int BPF_PROG(sched_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	u64 ts = bpf_ktime_get_ns();

	update_hist(prev, prev->tgid, prev->pid, ts);
	store_start(next->tgid, next->pid, ts);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
