// SPDX-License-Identifier: GPL-2.0
/* Prints one line per getppid() call of the target process, with the object's id
 * and a counter, once through bpf_trace_printk (3 arguments) and once through
 * bpf_trace_vprintk (5 arguments: bpf_printk switches above 3). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

const volatile __u32 target_pid = 0;
const volatile __u32 id = 0;
__u32 count = 0;

SEC("tracepoint/syscalls/sys_enter_getppid")
int count_getppid(void *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	__u32 n;

	if (pid != target_pid)
		return 0;
	n = __sync_add_and_fetch(&count, 1);
	bpf_printk("obj %u pid %u n=%u", id, pid, n);
	bpf_printk("args %u %u %u %u %u", id, n, n * 2, n * 3, n * 4);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
