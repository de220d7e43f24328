// SPDX-License-Identifier: GPL-2.0
/* connect() destinations, failed and successful openat() returns, signals sent and
 * system calls made by one process, with bpfnb.h's semantic types. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "bpfnb.h"
#include "semantic.h"

#define AF_INET 2
#define AF_INET6 10

const volatile __u32 target_tgid = 0;
const volatile __u32 target_tid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 0); /* sized by the loader */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, bpfnb_syscall_t);
	__type(value, __u64);
} syscalls SEC(".maps");

static __always_inline bool traced(void)
{
	return (bpf_get_current_pid_tgid() >> 32) == target_tgid;
}

static __always_inline struct event *new_event(enum hook hook)
{
	struct event *e = bpfnb_ringbuf_reserve(&events, struct event);

	if (!e)
		return NULL;
	__builtin_memset(e, 0, sizeof(*e));
	e->ts = bpf_ktime_get_ns();
	e->cgroup = bpf_get_current_cgroup_id();
	e->pid = target_tgid;
	e->hook = hook;
	return e;
}

SEC("tracepoint/syscalls/sys_enter_connect")
int on_connect(struct trace_event_raw_sys_enter *ctx)
{
	struct sockaddr_in6 sa = {};
	__u32 len = ctx->args[2];
	struct event *e;

	if (!traced())
		return 0;
	if (len > sizeof(sa))
		len = sizeof(sa);
	if (bpf_probe_read_user(&sa, len, (void *)ctx->args[1]))
		return 0;
	e = new_event(HOOK_CONNECT);
	if (!e)
		return 0;
	e->family = sa.sin6_family;
	e->dport = sa.sin6_port; /* sin_port is at the same offset */
	if (sa.sin6_family == AF_INET)
		e->daddr = ((struct sockaddr_in *)&sa)->sin_addr.s_addr;
	else if (sa.sin6_family == AF_INET6)
		__builtin_memcpy(e->daddr6, &sa.sin6_addr, sizeof(e->daddr6));
	else
		bpf_printk("connect: family %d not decoded", sa.sin6_family);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat")
int on_openat_exit(struct trace_event_raw_sys_exit *ctx)
{
	struct event *e;

	if ((__u32)bpf_get_current_pid_tgid() != target_tid)
		return 0;
	e = new_event(HOOK_OPENAT);
	if (!e)
		return 0;
	e->ret = ctx->ret;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tracepoint/signal/signal_generate")
int on_signal(struct trace_event_raw_signal_generate *ctx)
{
	struct event *e;

	if (!traced())
		return 0;
	e = new_event(HOOK_SIGNAL);
	if (!e)
		return 0;
	e->sig = ctx->sig;
	e->pid = ctx->pid;
	e->ret = -ctx->errno;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tracepoint/raw_syscalls/sys_enter")
int on_syscall(struct trace_event_raw_sys_enter *ctx)
{
	bpfnb_syscall_t nr = ctx->id;
	__u64 one = 1, *count;

	if ((__u32)bpf_get_current_pid_tgid() != target_tid)
		return 0;
	count = bpf_map_lookup_elem(&syscalls, &nr);
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bpf_map_update_elem(&syscalls, &nr, &one, BPF_NOEXIST);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
