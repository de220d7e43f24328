// SPDX-License-Identifier: GPL-2.0
/* Written as newer tools are, against a vmlinux.h that declares the kernel's kfuncs
 * (bpf_rcu_read_lock is declared nowhere else): libbpf then adds a "dummy_ksym"
 * variable, and a string, to the object's BTF at open. Each getppid() of targ_tgid
 * sends one event, numbered from 1. Its two printks (never reached) are clang's
 * on_getppid.____fmt and on_getppid.____fmt.1: internal, never listed. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "kfuncsnoop.h"

const volatile pid_t targ_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} calls SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u64 one = 1, *n;
	struct event *e;

	if (tgid != targ_tgid)
		return 0;
	n = bpf_map_lookup_elem(&calls, &tgid);
	if (n)
		*n += 1;
	else
		bpf_map_update_elem(&calls, &tgid, &one, BPF_ANY);
	n = bpf_map_lookup_elem(&calls, &tgid);
	if (!n) {
		bpf_printk("kfuncsnoop: no count for %d", tgid);
		return 0;
	}

	bpf_rcu_read_lock();
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (e) {
		e->pid = tgid;
		e->seq = *n;
		e->addr = bpf_htonl(0x7f000001);
		e->port = bpf_htons(8080);
		bpf_get_current_comm(e->comm, sizeof(e->comm));
		bpf_ringbuf_submit(e, 0);
	} else {
		bpf_printk("kfuncsnoop: ring buffer full");
	}
	bpf_rcu_read_unlock();
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
