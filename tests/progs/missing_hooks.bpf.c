// SPDX-License-Identifier: GPL-2.0
/* Hooks that do not exist on any kernel, beside one that does. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

__u64 getpids;

SEC("tracepoint/syscalls/sys_enter_no_such_syscall")
int no_tracepoint(void *ctx)
{
	return 0;
}

SEC("fentry/bpfnb_no_such_function")
int BPF_PROG(no_function)
{
	return 0;
}

SEC("uprobe//bpfnb/no/such/binary:main")
int BPF_KPROBE(no_binary)
{
	return 0;
}

SEC("tp_btf/bpfnb_no_such_event")
int BPF_PROG(no_raw_tracepoint)
{
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getpid")
int count_getpid(void *ctx)
{
	__sync_fetch_and_add(&getpids, 1);
	return 0;
}

SEC("perf_event")
int sample(struct bpf_perf_event_data *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
