// SPDX-License-Identifier: GPL-2.0
/* One event per getpid() of one process, written the four ways libbpf-tools and
 * libbpf-bootstrap write events, with the plain helpers (no bpfnb.h): a test loads
 * one program at a time, into small buffers, to check that what it receives plus
 * what the stream counts as lost is what the process did. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "getpidsnoop.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 0);	/* sized at load */
} rb_reserve SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 0);
} rb_output SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 0);
} rb_dynptr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(u32));
	__uint(value_size, sizeof(u32));
} perf_events SEC(".maps");

/* older kernels' layout, for CO-RE */
struct task_struct___o {
	struct task_struct___o *real_parent;
	pid_t tgid;
} __attribute__((preserve_access_index));

pid_t target_tgid = 0;	/* set once the process to watch exists */
u64 seen = 0;		/* every getpid() of it: what the test compares with */

static __always_inline bool watched(void)
{
	return target_tgid && (bpf_get_current_pid_tgid() >> 32) == target_tgid;
}

static __always_inline void fill(struct event *e, u64 seq)
{
	struct task_struct___o *task = (void *)bpf_get_current_task();

	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->seq = seq;
	e->ts = bpf_ktime_get_ns();
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
}

SEC("tracepoint/syscalls/sys_enter_getpid")
int getpid_reserve(void *ctx)
{
	struct event *e;
	u64 seq;

	if (!watched())
		return 0;
	seq = __sync_fetch_and_add(&seen, 1);
	e = bpf_ringbuf_reserve(&rb_reserve, sizeof(*e), 0);
	if (!e)
		return 0;
	fill(e, seq);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getpid")
int getpid_output(void *ctx)
{
	struct event e = {};

	if (!watched())
		return 0;
	fill(&e, __sync_fetch_and_add(&seen, 1));
	bpf_ringbuf_output(&rb_output, &e, sizeof(e), 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getpid")
int getpid_dynptr(void *ctx)
{
	struct bpf_dynptr ptr;
	struct event e = {};

	if (!watched())
		return 0;
	fill(&e, __sync_fetch_and_add(&seen, 1));
	if (bpf_ringbuf_reserve_dynptr(&rb_dynptr, sizeof(e), 0, &ptr)) {
		bpf_ringbuf_discard_dynptr(&ptr, 0);	/* the verifier wants it released */
		return 0;
	}
	bpf_dynptr_write(&ptr, 0, &e, sizeof(e), 0);
	bpf_ringbuf_submit_dynptr(&ptr, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getpid")
int getpid_perf(void *ctx)
{
	struct event e = {};

	if (!watched())
		return 0;
	fill(&e, __sync_fetch_and_add(&seen, 1));
	bpf_perf_event_output(ctx, &perf_events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return 0;
}
