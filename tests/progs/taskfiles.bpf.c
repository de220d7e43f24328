// SPDX-License-Identifier: GPL-2.0
/* For each open file of one process: the device of its file system and the kernel
 * function that reads it (an iterator over every task's files). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "bpfnb.h"

struct file_info {
	bpfnb_dev_t dev;
	__u64 ino;
	bpfnb_ksym_t read_iter;
};

const volatile __u32 target_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32); /* fd */
	__type(value, struct file_info);
} files SEC(".maps");

SEC("iter/task_file")
int dump_files(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct file_info info = {};
	__u32 fd = ctx->fd;

	if (!task || !file || task->tgid != target_tgid)
		return 0;
	info.dev = BPF_CORE_READ(file, f_inode, i_sb, s_dev);
	info.ino = BPF_CORE_READ(file, f_inode, i_ino);
	info.read_iter = (__u64)BPF_CORE_READ(file, f_op, read_iter);
	bpf_map_update_elem(&files, &fd, &info, BPF_ANY);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
