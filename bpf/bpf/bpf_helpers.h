/* bpfnb: libbpf's bpf_helpers.h, with bpf_printk tagged per loaded object.
 *
 * bpf/ is on bpfnb's include path before the system's, so <bpf/bpf_helpers.h> of a
 * cell, of the prelude and of a libbpf-tools style .c finds this file, which pulls in
 * the real header and redefines bpf_printk only:
 *
 * - by default (trace_pipe route) every format starts with a fixed-width tag,
 *   "bpfnb:________ ". The format lives in .rodata (static const char ____fmt[]);
 *   bpfnb.output overwrites the underscores in the object's .rodata initial image
 *   before load with a tag unique to that loaded object, and its trace_pipe reader
 *   hands each object the lines carrying its tag, tag removed. Unpatched (an object
 *   loaded by another loader), the placeholder is still a valid format: no '%'.
 * - with -DBPFNB_PRINTK_STREAM=<kfunc> (bpfnb passes it where its probe found BPF
 *   streams working) bpf_printk writes to the program's own stdout stream instead,
 *   through the kfunc named (bpf_stream_vprintk_impl on 6.18, bpf_stream_vprintk on
 *   6.17), which bpfnb reads per program.
 */
#ifndef __BPFNB_BPF_HELPERS_H__
#define __BPFNB_BPF_HELPERS_H__

#include_next <bpf/bpf_helpers.h>

#undef bpf_printk
#ifdef BPFNB_PRINTK_STREAM
extern int BPFNB_PRINTK_STREAM(int stream_id, const char *fmt__str, const void *args,
			       __u32 len__sz, void *aux__prog) __ksym;
#define bpf_printk(fmt, args...)						\
({										\
	static const char ___fmt[] = fmt;					\
	unsigned long long ___param[___bpf_narg(args)];				\
										\
	_Pragma("GCC diagnostic push")						\
	_Pragma("GCC diagnostic ignored \"-Wint-conversion\"")			\
	___bpf_fill(___param, args);						\
	_Pragma("GCC diagnostic pop")						\
										\
	BPFNB_PRINTK_STREAM(1 /* BPF_STDOUT */, ___fmt, ___param,		\
			    sizeof(___param), (void *)0);			\
})
#else
/* "bpfnb:" and 8 placeholder characters and a space; bpfnb.output.TAG_PLACEHOLDER */
#define BPFNB_PRINTK_TAG "bpfnb:________ "
#define bpf_printk(fmt, args...) ___bpf_pick_printk(args)(BPFNB_PRINTK_TAG fmt, ##args)
#endif

#endif /* __BPFNB_BPF_HELPERS_H__ */
