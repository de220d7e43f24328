// SPDX-License-Identifier: GPL-2.0
/* An opensnoop that ships three variants of one hook, as libbpf-tools do: a kprobe and
 * an fentry program on do_sys_openat2, and the sys_enter_openat tracepoint. A kernel
 * without kprobes or fentry runs the tracepoint alone. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "opensnoop_mixed.h"

const volatile pid_t targ_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 0);	/* sized by the loader */
} events SEC(".maps");

__u64 opens;
/* puts struct event in the BTF, for the reader (clang records no local types) */
const struct event *unused_event __attribute__((unused));

/* CO-RE flavour: older kernels named the field differently (as in libbpf-tools). */
struct task_struct___o {
	pid_t tgid;
} __attribute__((preserve_access_index));

static __always_inline pid_t current_tgid(void)
{
	struct task_struct___o *task = (void *)bpf_get_current_task();

	return BPF_CORE_READ(task, tgid);
}

static __always_inline int record(const char *filename, int flags, __u32 hook)
{
	struct event *e;
	pid_t tgid = current_tgid();

	if (targ_tgid && tgid != targ_tgid)
		return 0;
	__sync_fetch_and_add(&opens, 1);
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	e->pid = tgid;
	e->flags = flags;
	e->hook = hook;
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	bpf_probe_read_user_str(&e->fname, sizeof(e->fname), filename);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("kprobe/do_sys_openat2")
int BPF_KPROBE(kprobe_openat2, int dfd, const char *filename, struct open_how *how)
{
	return record(filename, BPF_CORE_READ(how, flags), HOOK_KPROBE);
}

SEC("fentry/do_sys_openat2")
int BPF_PROG(fentry_openat2, int dfd, const char *filename, struct open_how *how)
{
	return record(filename, how->flags, HOOK_FENTRY);
}

SEC("tracepoint/syscalls/sys_enter_openat")
int tracepoint_openat(struct trace_event_raw_sys_enter *ctx)
{
	return record((const char *)ctx->args[1], (int)ctx->args[2], HOOK_TRACEPOINT);
}

char LICENSE[] SEC("license") = "GPL";
