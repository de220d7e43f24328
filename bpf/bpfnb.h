#ifndef __BPFNB_H__
#define __BPFNB_H__

/* bpfnb: helpers and macros offered to every %%bpf cell (histograms, common
 * macros, BPF_UPROBE & co. where libbpf lacks them). Included after vmlinux.h and
 * libbpf's bpf_helpers.h, bpf_tracing.h, bpf_core_read.h, bpf_endian.h. */

#endif /* __BPFNB_H__ */
