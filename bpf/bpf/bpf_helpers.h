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
 *
 * and wraps the helpers that put records into ring buffers and perf buffers so that a
 * failed write is counted whatever the source calls (see "lost records" below).
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

/* --- lost records ---
 * bpf_ringbuf_reserve returning NULL, bpf_ringbuf_output, bpf_ringbuf_reserve_dynptr
 * and bpf_perf_event_output returning an error: the record never reaches user space.
 * Each is wrapped by a function-like macro of the same name that calls the original
 * (a macro is not expanded inside its own expansion) and, on failure only, adds 1 to
 * two static .bss counters: the object's total, bpfnb_lost, and one of the call site,
 * whose BTF decl tag "bpfnb_lost:<map argument as written>" lets bpfnb.stream give
 * each map its own count (a map written through a pointer variable cannot be named:
 * such sites count towards every map of the object, see EventStream.lost).
 * The success path gains one compare. Taking a helper's address or calling it as
 * (bpf_ringbuf_output)(...) does not expand the macro, so such calls compile and are
 * not counted. Statics: libbpf 1.1 refuses static maps, a global would show in every
 * cell, and the compiler drops these from objects that call none of the helpers.
 * __COUNTER__ names each site (clang's own "func.var.1" suffixes would hide the
 * bpfnb_ prefix that keeps the variables out of listings). */
static __u64 bpfnb_lost;

#define ___bpfnb_cat_(a, b) a##b
#define ___bpfnb_cat(a, b) ___bpfnb_cat_(a, b)
#if __has_attribute(btf_decl_tag)
#define ___bpfnb_site_tag(text) __attribute__((btf_decl_tag(text)))
#else  /* clang < 14: the sites stay anonymous and count towards every map */
#define ___bpfnb_site_tag(text)
#endif
#define ___bpfnb_count_lost(map_text, site) ({					\
	static __u64 site ___bpfnb_site_tag("bpfnb_lost:" map_text);		\
	__sync_fetch_and_add(&site, 1);						\
	__sync_fetch_and_add(&bpfnb_lost, 1);					\
})
#define ___bpfnb_lost(map_text) \
	___bpfnb_count_lost(map_text, ___bpfnb_cat(bpfnb_lost_site__, __COUNTER__))

#define bpf_ringbuf_reserve(ringbuf, size, flags) ({				\
	void *___bpfnb_rec = bpf_ringbuf_reserve(ringbuf, size, flags);		\
	if (!___bpfnb_rec)							\
		___bpfnb_lost(#ringbuf);					\
	___bpfnb_rec;								\
})
#define bpf_ringbuf_output(ringbuf, data, size, flags) ({			\
	long ___bpfnb_err = bpf_ringbuf_output(ringbuf, data, size, flags);	\
	if (___bpfnb_err)							\
		___bpfnb_lost(#ringbuf);					\
	___bpfnb_err;								\
})
#define bpf_ringbuf_reserve_dynptr(ringbuf, size, flags, ptr) ({		\
	long ___bpfnb_err = bpf_ringbuf_reserve_dynptr(ringbuf, size, flags, ptr); \
	if (___bpfnb_err)							\
		___bpfnb_lost(#ringbuf);					\
	___bpfnb_err;								\
})
#define bpf_perf_event_output(ctx, map, flags, data, size) ({			\
	long ___bpfnb_err = bpf_perf_event_output(ctx, map, flags, data, size);	\
	if (___bpfnb_err)							\
		___bpfnb_lost(#map);						\
	___bpfnb_err;								\
})
/* --- end lost records --- */

#endif /* __BPFNB_BPF_HELPERS_H__ */
