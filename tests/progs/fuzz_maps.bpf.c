// SPDX-License-Identifier: GPL-2.0
/* A map-heavy tool (the shape of libbpf-tools' syscount/runqlat): hash, per-CPU array,
 * LRU (sized at load), array-of-maps and a stack-trace map, plus .kconfig and .ksyms
 * externs (one of them weak) read on the hot path. The fuzz test mutates it. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "fuzz_maps.h"

char LICENSE[] SEC("license") = "GPL";

extern int LINUX_KERNEL_VERSION __kconfig;
extern bool CONFIG_PREEMPT __kconfig __weak;
extern void bpf_rcu_read_lock(void) __ksym;
extern void bpf_rcu_read_unlock(void) __ksym;
extern const int bpf_fuzz_missing_ksym __ksym __weak;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct task_key);
	__type(value, struct task_stat);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, u32);
	__type(value, u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 0); /* sized at load */
	__type(key, u32);
	__type(value, u64);
} seen SEC(".maps");

struct inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, u32);
	__type(value, u64);
} inner0 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, u32);
	__array(values, struct inner);
} outer SEC(".maps") = {
	.values = { [0] = &inner0 },
};

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(key_size, sizeof(u32));
	__uint(value_size, 127 * sizeof(u64));
	__uint(max_entries, 128);
} stacks SEC(".maps");

const volatile u32 targ_tgid = 0;
u64 kernel_version = 0, preempt = 0, have_missing = 0;

SEC("tracepoint/syscalls/sys_enter_getppid")
int count_getppid(struct trace_event_raw_sys_enter *ctx)
{
	struct task_key key = { .pid = bpf_get_current_pid_tgid() >> 32,
				.cpu = bpf_get_smp_processor_id() };
	struct task_stat zero = {}, *st;
	u32 idx = 0, slot = 0;
	u64 *cnt, now = bpf_ktime_get_ns();
	void *inner_map;

	if (targ_tgid && key.pid != targ_tgid)
		return 0;
	kernel_version = LINUX_KERNEL_VERSION;
	preempt = CONFIG_PREEMPT;
	have_missing = bpf_ksym_exists(&bpf_fuzz_missing_ksym);
	st = bpf_map_lookup_elem(&stats, &key);
	if (!st) {
		bpf_map_update_elem(&stats, &key, &zero, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&stats, &key);
		if (!st)
			return 0;
		bpf_get_current_comm(st->comm, sizeof(st->comm));
	}
	st->calls++;
	st->last_ns = now;
	cnt = bpf_map_lookup_elem(&counters, &idx);
	if (cnt)
		(*cnt)++;
	bpf_map_update_elem(&seen, &key.pid, &now, BPF_ANY);
	bpf_rcu_read_lock();
	inner_map = bpf_map_lookup_elem(&outer, &slot);
	if (inner_map) {
		cnt = bpf_map_lookup_elem(inner_map, &idx);
		if (cnt)
			(*cnt)++;
	}
	bpf_rcu_read_unlock();
	bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK);
	return 0;
}
