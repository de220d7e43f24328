#ifndef __BPFNB_H__
#define __BPFNB_H__

/* bpfnb: helpers and macros offered to every %%bpf cell (histograms, common
 * macros, BPF_UPROBE & co. where libbpf lacks them). Included after vmlinux.h and
 * libbpf's bpf_helpers.h, bpf_tracing.h, bpf_core_read.h, bpf_endian.h. */

/* --- compat --- */
/* What newer libbpf headers offer and libbpf 1.1.2 lacks; each only when missing. */

/* A uprobe's context is a struct pt_regs, as a kprobe's: same argument unpacking. */
#ifndef BPF_UPROBE
#define BPF_UPROBE(name, args...) BPF_KPROBE(name, ##args)
#endif
#ifndef BPF_URETPROBE
#define BPF_URETPROBE(name, args...) BPF_KRETPROBE(name, ##args)
#endif

/* True when a __weak __ksym symbol was found in the running kernel. */
#ifndef bpf_ksym_exists
#define bpf_ksym_exists(sym) ({                                                 \
	_Static_assert(!__builtin_constant_p(!!sym), #sym " should be marked as __weak"); \
	!!sym;                                                                  \
})
#endif
/* --- end compat --- */

#endif /* __BPFNB_H__ */
