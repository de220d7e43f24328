#ifndef __BPFNB_COMPAT_H__
#define __BPFNB_COMPAT_H__

/* bpfnb: what libbpf >= 1.2 headers offer and older ones (Debian's 1.1.2) lack, so
 * that sources written against newer headers compile unmodified.
 *
 * bpfnb.build puts this header before every source it compiles (-include), and
 * bpfnb.h includes it for cells: it must stand alone (no types needed from
 * vmlinux.h or libbpf's headers when it is read, only when its macros expand). Each
 * definition is made only when the libbpf headers on the include path are older
 * than the version that brought it, so newer headers never see a second definition.
 */

#if __has_include(<bpf/libbpf_version.h>)
#include <bpf/libbpf_version.h>
#endif
#ifndef LIBBPF_MAJOR_VERSION
#define LIBBPF_MAJOR_VERSION 0
#define LIBBPF_MINOR_VERSION 0
#endif
#define __BPFNB_LIBBPF_BEFORE(major, minor)                                     \
	(LIBBPF_MAJOR_VERSION < (major) ||                                      \
	 (LIBBPF_MAJOR_VERSION == (major) && LIBBPF_MINOR_VERSION < (minor)))

/* The attributes of a kernel symbol, spelt out: __ksym and __weak come from
 * bpf_helpers.h, which may not be included yet. */
#define __bpfnb_weak_ksym __attribute__((weak, section(".ksyms")))

#if __BPFNB_LIBBPF_BEFORE(1, 2)

/* A uprobe's context is a struct pt_regs, as a kprobe's: same argument unpacking
 * (BPF_KPROBE comes from bpf_tracing.h, needed only where these expand). */
#ifndef BPF_UPROBE
#define BPF_UPROBE(name, args...) BPF_KPROBE(name, ##args)
#endif
#ifndef BPF_URETPROBE
#define BPF_URETPROBE(name, args...) BPF_KRETPROBE(name, ##args)
#endif

/* True when a __weak __ksym symbol was found in the running kernel: libbpf sets an
 * unresolved weak kfunc or variable to 0, and the verifier drops the dead branch. */
#ifndef bpf_ksym_exists
#define bpf_ksym_exists(sym) ({                                                 \
	_Static_assert(!__builtin_constant_p(!!sym),                            \
		       #sym " should be declared __weak");                      \
	!!sym;                                                                  \
})
#endif

/* A kptr the program does not own a reference to (the kernel's "kptr_untrusted"). */
#ifndef __kptr_untrusted
#define __kptr_untrusted __attribute__((btf_type_tag("kptr_untrusted")))
#endif

/* Open-coded iterators (Linux >= 6.4): bpf_for(i, start, end) runs i over
 * [start, end); bpf_repeat(n) runs n times; bpf_for_each(type, cur, args...) walks
 * the kernel iterator bpf_iter_<type>. The iterator state lives on the stack and is
 * destroyed when the loop is left (cleanup attribute), as the verifier requires. */
struct bpf_iter_num;
extern int bpf_iter_num_new(struct bpf_iter_num *it, int start, int end) __bpfnb_weak_ksym;
extern int *bpf_iter_num_next(struct bpf_iter_num *it) __bpfnb_weak_ksym;
extern void bpf_iter_num_destroy(struct bpf_iter_num *it) __bpfnb_weak_ksym;

#ifndef bpf_for_each
#define bpf_for_each(type, cur, args...) for (                                  \
	struct bpf_iter_##type ___bpfnb_it __attribute__((aligned(8),           \
		cleanup(bpf_iter_##type##_destroy))),                           \
	*___bpfnb_p __attribute__((unused)) =                                   \
		(bpf_iter_##type##_new(&___bpfnb_it, ##args),                   \
		 (void)bpf_iter_##type##_destroy, (void *)0);                   \
	(((cur) = bpf_iter_##type##_next(&___bpfnb_it)));                       \
)
#endif

#ifndef bpf_for
#define bpf_for(i, start, end) for (                                            \
	struct bpf_iter_num ___bpfnb_it __attribute__((aligned(8),              \
		cleanup(bpf_iter_num_destroy))),                                \
	*___bpfnb_p __attribute__((unused)) =                                   \
		(bpf_iter_num_new(&___bpfnb_it, (start), (end)),                \
		 (void)bpf_iter_num_destroy, (void *)0);                        \
	({                                                                      \
		/* the bounds check tells the verifier i's range */            \
		int *___bpfnb_t = bpf_iter_num_next(&___bpfnb_it);              \
		(___bpfnb_t && ((i) = *___bpfnb_t, (i) >= (start) && (i) < (end))); \
	});                                                                     \
)
#endif

#ifndef bpf_repeat
#define bpf_repeat(N) for (                                                     \
	struct bpf_iter_num ___bpfnb_it __attribute__((aligned(8),              \
		cleanup(bpf_iter_num_destroy))),                                \
	*___bpfnb_p __attribute__((unused)) =                                   \
		(bpf_iter_num_new(&___bpfnb_it, 0, (N)),                        \
		 (void)bpf_iter_num_destroy, (void *)0);                        \
	bpf_iter_num_next(&___bpfnb_it);                                        \
)
#endif

#endif /* libbpf < 1.2 */

#if __BPFNB_LIBBPF_BEFORE(1, 3)

/* Per-CPU kptrs (Linux >= 6.6). */
#ifndef __percpu_kptr
#define __percpu_kptr __attribute__((btf_type_tag("percpu_kptr")))
#endif

/* Argument tags of global (non-inlined) functions, read by the verifier. */
#ifndef __arg_ctx
#define __arg_ctx __attribute__((btf_decl_tag("arg:ctx")))
#define __arg_nonnull __attribute__((btf_decl_tag("arg:nonnull")))
#define __arg_nullable __attribute__((btf_decl_tag("arg:nullable")))
#define __arg_trusted __attribute__((btf_decl_tag("arg:trusted")))
#define __arg_arena __attribute__((btf_decl_tag("arg:arena")))
#endif

/* A kernel pointer of any provenance read through the kernel type, without
 * bpf_probe_read (kfunc bpf_rdonly_cast, Linux >= 6.2). */
extern void *bpf_rdonly_cast(const void *obj, unsigned int btf_id) __bpfnb_weak_ksym;
#ifndef bpf_core_cast
#define bpf_core_cast(ptr, type)                                                \
	((typeof(type) *)bpf_rdonly_cast((ptr), bpf_core_type_id_kernel(type)))
#endif

#endif /* libbpf < 1.3 */

#if __BPFNB_LIBBPF_BEFORE(1, 4)

/* A number carried in a map definition (e.g. __ulong(map_extra, ...)). */
#ifndef __ulong
#define __bpfnb_concat_(a, b) a##b
#define __bpfnb_concat(a, b) __bpfnb_concat_(a, b)
#define __ulong(name, val) enum { __bpfnb_concat(__unique_value, __COUNTER__) = val } name
#endif

#endif /* libbpf < 1.4 */

#endif /* __BPFNB_COMPAT_H__ */
