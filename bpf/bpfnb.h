#ifndef __BPFNB_H__
#define __BPFNB_H__

/* bpfnb: helpers and macros offered to every %%bpf cell (histograms, common
 * macros, BPF_UPROBE & co. where libbpf lacks them). Included after vmlinux.h and
 * libbpf's bpf_helpers.h, bpf_tracing.h, bpf_core_read.h, bpf_endian.h. */

/* --- compat --- */
/* What newer libbpf headers offer and libbpf 1.1.2 lacks (BPF_UPROBE, bpf_ksym_exists,
 * bpf_for, ...): see bpfnb_compat.h, which bpfnb.build also gives to every .c file. */
#include "bpfnb_compat.h"
/* The running kernel's kfunc prototypes (generated beside vmlinux.h). */
#if __has_include("bpfnb_kfuncs.h")
#include "bpfnb_kfuncs.h"
#endif
/* --- end compat --- */

/* --- events --- */
/* Writing records to a ring buffer (or perf buffer) so that the Python side can
 * decode them and count what was lost:
 *
 *	bpfnb_ringbuf_output(&rb, &event, sizeof(event));
 *
 *	struct event *e = bpfnb_ringbuf_reserve(&rb, struct event);
 *	if (!e)
 *		return 0;
 *	e->pid = ...;
 *	bpf_ringbuf_submit(e, 0);
 *
 *	bpfnb_perf_output(ctx, &perf_map, &event, sizeof(event));
 *
 * EventStream finds the record's type without them, from the object's DWARF (plain
 * bpf_ringbuf_reserve/output and bpf_perf_event_output do as well); each also puts
 * the type in the program's BTF, which clang leaves out for types of local
 * variables, so that an object stripped of its DWARF still names it.
 *
 * A reservation or output fails when the buffer is full: bpfnb's <bpf/bpf_helpers.h>
 * counts every failed one, made through these helpers or the plain ones (bpfnb_lost
 * and a counter per call site: see the "lost records" part there), and
 * EventStream.lost reports them. */

#define bpfnb_record_type(type) \
	asm volatile("" :: "r"(__builtin_btf_type_id(*(type *)0, 0)))

#define bpfnb_ringbuf_output(ringbuf, data, size) ({		\
	bpfnb_record_type(typeof(*(data)));			\
	bpf_ringbuf_output(ringbuf, data, size, 0);		\
})

#define bpfnb_ringbuf_reserve(ringbuf, type) ({			\
	bpfnb_record_type(type);				\
	(type *)bpf_ringbuf_reserve(ringbuf, sizeof(type), 0);	\
})

#define bpfnb_perf_output(ctx, map, data, size) ({		\
	bpfnb_record_type(typeof(*(data)));			\
	bpf_perf_event_output(ctx, map, BPF_F_CURRENT_CPU, data, size); \
})
/* --- end events --- */

/* --- semantic types --- */
/* Typedefs that tell Python what a number means. A map key or value, or an event
 * field, declared with one of them becomes a decoded DataFrame column, the number
 * kept in a <name>_raw column (see bpfnb/decode.py):
 *
 *	struct event { bpfnb_ipv4_t daddr; bpfnb_port_t dport; bpfnb_errno_t ret; };
 *	-> daddr "127.0.0.1", dport 8080, ret "ENOENT" (daddr_raw, dport_raw, ret_raw)
 *
 * Each is the plain type the kernel uses, so assignments need no cast. Typedef
 * names survive in BTF and DWARF: that is all Python needs. */
typedef __be32 bpfnb_ipv4_t;     /* IPv4 address as the kernel keeps it (network order:
				    sin_addr.s_addr, iph->daddr, skc_daddr) -> "10.0.0.1" */
typedef __u8 bpfnb_ipv6_t[16];   /* IPv6 address (in6_addr bytes) -> "::1" */
typedef __be16 bpfnb_port_t;     /* port in network order (sin_port, skc_dport) -> 8080 */
typedef __s64 bpfnb_errno_t;     /* a return value: -ENOENT -> "ENOENT", 3 -> "3" */
typedef __s64 bpfnb_syscall_t;   /* syscall number (raw_syscalls id) -> "openat" */
typedef __s32 bpfnb_signal_t;    /* signal number -> "SIGUSR1" */
typedef __u64 bpfnb_ksym_t;      /* kernel address -> "pipe_read+0x10" (kallsyms) */
typedef __u64 bpfnb_ktime_t;     /* bpf_ktime_get_ns() -> wall-clock pandas Timestamp */
typedef __u32 bpfnb_dev_t;       /* kernel dev_t (sb->s_dev: major << 20 | minor) -> "8:0" */
typedef __u64 bpfnb_cgroup_t;    /* cgroup id (bpf_get_current_cgroup_id()) -> its path */
/* --- end semantic types --- */

/* --- histograms --- */
/* Log2 and linear histograms, as BCC's BPF_HISTOGRAM + bpf_log2l and bpftrace's
 * hist()/lhist(). Map.hist() in Python recognises these maps by their value type
 * (struct bpfnb_hist, struct bpfnb_lhist__<name>) and prints or plots them.
 *
 *	BPFNB_HIST(lat, 32);                      bpfnb_hist_log2(&lat, delta_ns);
 *	BPFNB_LHIST(sizes, 0, 4096, 256);         bpfnb_lhist(&sizes, bytes);
 *	BPFNB_HIST_KEYED(lat_by_pid, u32, 1024);  bpfnb_hist_log2_keyed(&lat_by_pid, pid, delta_ns);
 *	BPFNB_LHIST_KEYED(sz_by_cpu, u32, 64, 0, 4096, 256);
 *	                                          bpfnb_lhist_keyed(&sz_by_cpu, cpu, bytes);
 *
 * Log2: slot 0 counts the value 0, slot k counts [2^(k-1), 2^k); values past the
 * last slot are counted in it. Linear: slot 0 counts values below min, slot i counts
 * [min + (i-1)*step, min + i*step), the last slot values >= max; (max - min) must be a
 * multiple of step. A keyed histogram is a hash map from {key, slot} to the count:
 * one histogram per key (a scalar or a struct, e.g. a pid, a CPU, a comm).
 *
 * A linear histogram's bounds travel in the BTF of its value type, as the sizes of
 * zero-length arrays (bpfnb_min[0][min] ...), so the map alone describes it: the
 * helpers read them back with sizeof at compile time, and Python from the BTF. */
struct bpfnb_hist {
	__u64 count;
};

#define BPFNB_HIST(name, max_slots)                                             \
	struct {                                                                \
		__uint(type, BPF_MAP_TYPE_ARRAY);                               \
		__uint(max_entries, max_slots);                                 \
		__type(key, __u32);                                             \
		__type(value, struct bpfnb_hist);                               \
	} name SEC(".maps")

/* The key of a keyed histogram: the user's key and the slot. */
#define BPFNB_HIST_KEY_(name, keytype)                                          \
	struct bpfnb_hist_key__##name {                                         \
		keytype key;                                                    \
		__u32 slot;                                                     \
	}

#define BPFNB_HIST_KEYED(name, keytype, max_entries_)                           \
	BPFNB_HIST_KEY_(name, keytype);                                         \
	struct {                                                                \
		__uint(type, BPF_MAP_TYPE_HASH);                                \
		__uint(max_entries, max_entries_);                              \
		__type(key, struct bpfnb_hist_key__##name);                     \
		__type(value, struct bpfnb_hist);                               \
	} name SEC(".maps")

/* min may be negative: it is stored as two non-negative sizes, min and -min. */
#define BPFNB_LHIST_VALUE_(name, min, max, step)                                \
	_Static_assert((step) > 0 && (max) > (min) && ((max) - (min)) % (step) == 0,   \
		       "BPFNB_LHIST(" #name "): need step > 0, max > min and "   \
		       "(max - min) a multiple of step");                        \
	_Static_assert((min) > -0x80000000LL && (min) < 0x80000000LL &&          \
		       (max) - (min) < 0x80000000LL,                             \
		       "BPFNB_LHIST(" #name "): min and max - min must fit in 31 bits"); \
	struct bpfnb_lhist__##name {                                            \
		__u64 count;                                                    \
		char bpfnb_min[0][(min) > 0 ? (min) : 0];                       \
		char bpfnb_neg_min[0][(min) < 0 ? -(min) : 0];                  \
		char bpfnb_span[0][(max) - (min)];                              \
		char bpfnb_step[0][step];                                       \
	}

#define BPFNB_LHIST(name, min, max, step)                                       \
	BPFNB_LHIST_VALUE_(name, min, max, step);                               \
	struct {                                                                \
		__uint(type, BPF_MAP_TYPE_ARRAY);                               \
		__uint(max_entries, ((max) - (min)) / (step) + 2);              \
		__type(key, __u32);                                             \
		__type(value, struct bpfnb_lhist__##name);                      \
	} name SEC(".maps")

#define BPFNB_LHIST_KEYED(name, keytype, max_entries_, min, max, step)          \
	BPFNB_LHIST_VALUE_(name, min, max, step);                               \
	BPFNB_HIST_KEY_(name, keytype);                                         \
	struct {                                                                \
		__uint(type, BPF_MAP_TYPE_HASH);                                \
		__uint(max_entries, max_entries_);                              \
		__type(key, struct bpfnb_hist_key__##name);                     \
		__type(value, struct bpfnb_lhist__##name);                      \
	} name SEC(".maps")

/* floor(log2(v)) without loops (the verifier's taste), 0 for v == 0. */
static __always_inline __u32 bpfnb_log2(__u64 v)
{
	__u32 r, shift;

	r = (v > 0xFFFFFFFFULL) << 5; v >>= r;
	shift = (v > 0xFFFF) << 4; v >>= shift; r |= shift;
	shift = (v > 0xFF) << 3; v >>= shift; r |= shift;
	shift = (v > 0xF) << 2; v >>= shift; r |= shift;
	shift = (v > 0x3) << 1; v >>= shift; r |= shift;
	return r | (__u32)(v >> 1);
}

static __always_inline __u32 bpfnb_log2_slot(__u64 v)
{
	return v ? bpfnb_log2(v) + 1 : 0;
}

static __always_inline __u32 bpfnb_lhist_slot(__s64 v, __s64 min, __s64 max, __s64 step)
{
	if (v < min)
		return 0;
	if (v >= max)
		return (__u64)(max - min) / step + 1;
	return (__u64)(v - min) / step + 1;
}

/* Compile-time values carried by a map definition and its lhist value type. */
#define bpfnb_max_entries_(map) (sizeof(*(map)->max_entries) / sizeof(int))
#define bpfnb_lhist_dim_(map, field)                                            \
	((__s64)sizeof(((typeof(*(map)->value) *)0)->field[0]))
#define bpfnb_lhist_min_(map)                                                   \
	(bpfnb_lhist_dim_(map, bpfnb_min) - bpfnb_lhist_dim_(map, bpfnb_neg_min))
#define bpfnb_lhist_slot_(map, v)                                               \
	bpfnb_lhist_slot((v), bpfnb_lhist_min_(map),                            \
			 bpfnb_lhist_min_(map) + bpfnb_lhist_dim_(map, bpfnb_span), \
			 bpfnb_lhist_dim_(map, bpfnb_step))

static __always_inline void bpfnb_hist_slot_add_(void *map, __u32 slot, __u32 nslots)
{
	struct bpfnb_hist *h;

	if (slot >= nslots)
		slot = nslots - 1;
	h = bpf_map_lookup_elem(map, &slot);
	if (h)
		__sync_fetch_and_add(&h->count, 1);
}

static __always_inline void bpfnb_hist_key_add_(void *map, const void *key)
{
	struct bpfnb_hist zero = {}, *h;

	h = bpf_map_lookup_elem(map, key);
	if (!h) {
		bpf_map_update_elem(map, key, &zero, BPF_NOEXIST);
		h = bpf_map_lookup_elem(map, key);
		if (!h)
			return;
	}
	__sync_fetch_and_add(&h->count, 1);
}

/* The key struct is zeroed first: a hash map hashes its padding too. */
#define bpfnb_hist_keyed_add_(map, k, slot_) ({                                 \
	typeof(*(map)->key) bpfnb_k_;                                           \
	__builtin_memset(&bpfnb_k_, 0, sizeof(bpfnb_k_));                       \
	bpfnb_k_.key = (k);                                                     \
	bpfnb_k_.slot = (slot_);                                                \
	bpfnb_hist_key_add_((map), &bpfnb_k_);                                  \
})

#define bpfnb_hist_log2(map, v)                                                 \
	bpfnb_hist_slot_add_((map), bpfnb_log2_slot(v), bpfnb_max_entries_(map))
#define bpfnb_lhist(map, v)                                                     \
	bpfnb_hist_slot_add_((map), bpfnb_lhist_slot_(map, v), bpfnb_max_entries_(map))
#define bpfnb_hist_log2_keyed(map, k, v)                                        \
	bpfnb_hist_keyed_add_(map, k, bpfnb_log2_slot(v))
#define bpfnb_lhist_keyed(map, k, v)                                            \
	bpfnb_hist_keyed_add_(map, k, bpfnb_lhist_slot_(map, v))
/* --- end histograms --- */

/* --- aggregations --- */
/* bpftrace's map functions in one line each. Declare at file scope, update in a
 * program:
 *
 *	BPFNB_COUNT(syscalls, struct bpfnb_comm);   bpfnb_count(&syscalls, bpfnb_comm());
 *	BPFNB_SUM(bytes, u32);                      bpfnb_sum(&bytes, bpfnb_pid(), ret);
 *	BPFNB_MIN / BPFNB_MAX / BPFNB_AVG / BPFNB_STATS (name, keytype)
 *	                                  bpfnb_min(&m, key, v) ... bpfnb_stats(&m, key, v)
 *	BPFNB_HISTK(lat, bpfnb_nokey, 2);           bpfnb_histk(&lat, 0, delta);  (hist(v, 2))
 *	BPFNB_TSERIES(rate, 100000000, 64);         bpfnb_tseries(&rate, 1);      (100 ms x 64)
 *	lhist(v, min, max, step): BPFNB_LHIST / BPFNB_LHIST_KEYED above.
 *
 * Keys are any value of the declared key type: a number, bpfnb_comm(), bpfnb_pid(),
 * bpfnb_tid(), bpfnb_cpu(), bpfnb_kstack(ctx, &stacks), bpfnb_ustack(ctx, &stacks),
 * bpfnb_str_user(ptr) / bpfnb_str_kernel(ptr), or a struct of several (a compound
 * literal: (struct k){bpfnb_pid(), sig}). bpfnb_nokey is the key of a map without one
 * (bpftrace's @x = count()): pass 0. A hash map hashes the key's padding too, so give
 * struct keys no holes (order members by size).
 *
 * The maps are per-CPU hashes (max_entries 0: sized at load, 10240 by default,
 * bpfnb.load(maps={name: n}) for more), as bpftrace's are: each CPU updates its own
 * copy without atomics, so there is no cache-line bouncing on a hot key and no lost
 * update, and min/max need no compare-and-swap retry loop (which the verifier would
 * have to bound). Python adds the CPUs' counts and sums and takes the min of mins, the
 * max of maxes, over the CPUs whose count is non-zero. The one race left is a program
 * interrupted on its CPU by another updating the same entry (a perf_event sample in
 * NMI over a tracepoint): bpftrace has the same.
 *
 * Values are read as signed 64-bit. The value types (struct bpfnb_count ...) name the
 * aggregation, so Map.to_df() knows how to combine and show it. */
typedef __u32 bpfnb_nokey;

struct bpfnb_count { __u64 count; };
struct bpfnb_sum { __s64 sum; };
struct bpfnb_min { __u64 count; __s64 min; };
struct bpfnb_max { __u64 count; __s64 max; };
struct bpfnb_avg { __u64 count; __s64 sum; };
struct bpfnb_stats { __u64 count; __s64 sum; __s64 min; __s64 max; };

#define BPFNB_AGG_MAP_(name, keytype, valuetype)                                \
	struct {                                                                \
		__uint(type, BPF_MAP_TYPE_PERCPU_HASH);                         \
		__uint(max_entries, 0);                                         \
		__type(key, keytype);                                           \
		__type(value, valuetype);                                       \
	} name SEC(".maps")

#define BPFNB_COUNT(name, keytype) BPFNB_AGG_MAP_(name, keytype, struct bpfnb_count)
#define BPFNB_SUM(name, keytype) BPFNB_AGG_MAP_(name, keytype, struct bpfnb_sum)
#define BPFNB_MIN(name, keytype) BPFNB_AGG_MAP_(name, keytype, struct bpfnb_min)
#define BPFNB_MAX(name, keytype) BPFNB_AGG_MAP_(name, keytype, struct bpfnb_max)
#define BPFNB_AVG(name, keytype) BPFNB_AGG_MAP_(name, keytype, struct bpfnb_avg)
#define BPFNB_STATS(name, keytype) BPFNB_AGG_MAP_(name, keytype, struct bpfnb_stats)

/* This CPU's value for key, created zeroed when missing. */
static __always_inline void *bpfnb_agg_get_(void *map, const void *key, const void *zero)
{
	void *v = bpf_map_lookup_elem(map, key);

	if (v)
		return v;
	bpf_map_update_elem(map, key, zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(map, key);
}

/* The key is copied into a zeroed variable of the map's key type (a number widens
 * or narrows to it; a struct must be of that type). */
#define bpfnb_agg_value_(map, k) ({                                             \
	typeof(*(map)->key) bpfnb_k_;                                           \
	typeof(*(map)->value) bpfnb_z_;                                         \
	__builtin_memset(&bpfnb_k_, 0, sizeof(bpfnb_k_));                       \
	__builtin_memset(&bpfnb_z_, 0, sizeof(bpfnb_z_));                       \
	bpfnb_k_ = (k);                                                         \
	(typeof(*(map)->value) *)bpfnb_agg_get_((map), &bpfnb_k_, &bpfnb_z_);   \
})

#define bpfnb_count(map, k) ({                                                  \
	typeof(*(map)->value) *bpfnb_v_ = bpfnb_agg_value_(map, k);             \
	if (bpfnb_v_)                                                           \
		bpfnb_v_->count++;                                              \
})

#define bpfnb_sum(map, k, v) ({                                                 \
	__s64 bpfnb_x_ = (v);                                                   \
	typeof(*(map)->value) *bpfnb_v_ = bpfnb_agg_value_(map, k);             \
	if (bpfnb_v_)                                                           \
		bpfnb_v_->sum += bpfnb_x_;                                      \
})

#define bpfnb_avg(map, k, v) ({                                                 \
	__s64 bpfnb_x_ = (v);                                                   \
	typeof(*(map)->value) *bpfnb_v_ = bpfnb_agg_value_(map, k);             \
	if (bpfnb_v_) {                                                         \
		bpfnb_v_->count++;                                              \
		bpfnb_v_->sum += bpfnb_x_;                                      \
	}                                                                       \
})

#define bpfnb_min(map, k, v) ({                                                 \
	__s64 bpfnb_x_ = (v);                                                   \
	typeof(*(map)->value) *bpfnb_v_ = bpfnb_agg_value_(map, k);             \
	if (bpfnb_v_ && (!bpfnb_v_->count++ || bpfnb_x_ < bpfnb_v_->min))       \
		bpfnb_v_->min = bpfnb_x_;                                       \
})

#define bpfnb_max(map, k, v) ({                                                 \
	__s64 bpfnb_x_ = (v);                                                   \
	typeof(*(map)->value) *bpfnb_v_ = bpfnb_agg_value_(map, k);             \
	if (bpfnb_v_ && (!bpfnb_v_->count++ || bpfnb_x_ > bpfnb_v_->max))       \
		bpfnb_v_->max = bpfnb_x_;                                       \
})

static __always_inline void bpfnb_stats_add_(struct bpfnb_stats *s, __s64 v)
{
	if (!s)
		return;
	if (!s->count || v < s->min)
		s->min = v;
	if (!s->count || v > s->max)
		s->max = v;
	s->count++;
	s->sum += v;
}

#define bpfnb_stats(map, k, v) ({                                               \
	__s64 bpfnb_x_ = (v);                                                   \
	bpfnb_stats_add_(bpfnb_agg_value_(map, k), bpfnb_x_);                   \
})

/* Keys. Each is a value, usable alone or as a member of a struct key. */
struct bpfnb_comm { char comm[16]; };
#define bpfnb_comm() ({                                                         \
	struct bpfnb_comm bpfnb_c_ = {};                                        \
	bpf_get_current_comm(bpfnb_c_.comm, sizeof(bpfnb_c_.comm));             \
	bpfnb_c_;                                                               \
})
#define bpfnb_pid() ((__u32)(bpf_get_current_pid_tgid() >> 32))
#define bpfnb_tid() ((__u32)bpf_get_current_pid_tgid())
#define bpfnb_cpu() ((__u32)bpf_get_smp_processor_id())

/* A string key, bpftrace's str(): 64 bytes, as bpftrace's default. */
struct bpfnb_str { char str[64]; };
#define bpfnb_str_user(ptr) ({                                                  \
	struct bpfnb_str bpfnb_s_ = {};                                         \
	bpf_probe_read_user_str(bpfnb_s_.str, sizeof(bpfnb_s_.str), (const void *)(ptr)); \
	bpfnb_s_;                                                               \
})
#define bpfnb_str_kernel(ptr) ({                                                \
	struct bpfnb_str bpfnb_s_ = {};                                         \
	bpf_probe_read_kernel_str(bpfnb_s_.str, sizeof(bpfnb_s_.str), (const void *)(ptr)); \
	bpfnb_s_;                                                               \
})

/* Stacks: ids into a stack-trace map, which Map.to_df() resolves to frame names.
 * BPFNB_STACKS(stacks) leaves depth and size to the loader (127 frames, 10240
 * stacks). A user stack carries its pid: user addresses mean something only in the
 * process they come from. A negative id is bpf_get_stackid()'s error (-EFAULT: no
 * stack of that kind, e.g. no kernel stack for a sample in user mode). */
#define BPFNB_STACKS(name)                                                      \
	struct {                                                                \
		__uint(type, BPF_MAP_TYPE_STACK_TRACE);                         \
		__uint(max_entries, 0);                                         \
		__uint(key_size, sizeof(__u32));                                \
	} name SEC(".maps")

struct bpfnb_kstack { __s32 kstack_id; };
struct bpfnb_ustack { __s32 ustack_id; __u32 pid; };
#define bpfnb_kstack(ctx, stacks)                                               \
	((struct bpfnb_kstack){ (__s32)bpf_get_stackid((ctx), (stacks), 0) })
#define bpfnb_ustack(ctx, stacks)                                               \
	((struct bpfnb_ustack){ (__s32)bpf_get_stackid((ctx), (stacks), BPF_F_USER_STACK), \
				bpfnb_pid() })

/* bpftrace's hist(v, k): log2 buckets, each power of two split into 2^k linear
 * ones (k = 0..5), with bpftrace's bucket numbers: slot 0 counts negative values,
 * slots 1 .. 2^(k+1) the values 0 .. 2^(k+1) - 1 one each, and from there on slot
 * ((p - k + 1) << k) + m + 1 counts [2^(p-k) * (2^k + m), 2^(p-k) * (2^k + m + 1))
 * for a value whose highest bit is p and whose k bits below it are m. The map is
 * keyed by {key, slot}; k travels in the value type's BTF, like lhist's bounds. */
#define BPFNB_HISTK(name, keytype, k)                                           \
	_Static_assert((k) >= 0 && (k) <= 5, "BPFNB_HISTK(" #name "): k is 0..5"); \
	BPFNB_HIST_KEY_(name, keytype);                                         \
	struct bpfnb_histk__##name {                                             \
		__u64 count;                                                    \
		char bpfnb_k[0][k];                                             \
	};                                                                      \
	BPFNB_AGG_MAP_(name, struct bpfnb_hist_key__##name, struct bpfnb_histk__##name)

static __always_inline __u32 bpfnb_log2k_slot(__s64 v, __u32 k)
{
	__u32 p;

	if (v < 0)
		return 0;
	if (v < (2LL << k))
		return v + 1;
	p = bpfnb_log2(v);
	return ((p - k + 1) << k) + ((__u64)v >> (p - k) & ((1U << k) - 1)) + 1;
}

#define bpfnb_histk(map, k, v) ({                                                \
	__s64 bpfnb_x_ = (v);                                                   \
	typeof(*(map)->key) bpfnb_hk_;                                          \
	typeof(*(map)->value) bpfnb_z_, *bpfnb_v_;                              \
	__builtin_memset(&bpfnb_hk_, 0, sizeof(bpfnb_hk_));                     \
	__builtin_memset(&bpfnb_z_, 0, sizeof(bpfnb_z_));                       \
	bpfnb_hk_.key = (k);                                                    \
	bpfnb_hk_.slot = bpfnb_log2k_slot(bpfnb_x_, sizeof(bpfnb_z_.bpfnb_k[0])); \
	bpfnb_v_ = bpfnb_agg_get_((map), &bpfnb_hk_, &bpfnb_z_);                \
	if (bpfnb_v_)                                                           \
		bpfnb_v_->count++;                                              \
})

/* bpftrace's tseries: values summed per time interval of interval_ns, the last n
 * intervals kept. Slot (now / interval) % n of a per-CPU array holds the interval's
 * number and its sum; a slot still holding an older interval is restarted. Python
 * adds the CPUs' sums per interval and drops intervals older than n. The interval
 * travels in the value type's BTF (as two 32-bit halves). */
#define BPFNB_TSERIES(name, interval_ns, n)                                     \
	_Static_assert((interval_ns) > 0 && (n) > 0,                            \
		       "BPFNB_TSERIES(" #name "): need interval_ns > 0 and n > 0"); \
	struct bpfnb_tseries__##name {                                          \
		__u64 interval;                                                 \
		__s64 value;                                                    \
		char bpfnb_ns_hi[0][(__u64)(interval_ns) >> 32];                \
		char bpfnb_ns_lo[0][(__u64)(interval_ns) & 0xffffffffULL];      \
	};                                                                      \
	struct {                                                                \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);                        \
		__uint(max_entries, n);                                         \
		__type(key, __u32);                                             \
		__type(value, struct bpfnb_tseries__##name);                    \
	} name SEC(".maps")

#define bpfnb_tseries_ns_(map)                                                  \
	((sizeof(((typeof(*(map)->value) *)0)->bpfnb_ns_hi[0]) << 32) |         \
	 sizeof(((typeof(*(map)->value) *)0)->bpfnb_ns_lo[0]))

#define bpfnb_tseries(map, v) ({                                                \
	__s64 bpfnb_x_ = (v);                                                   \
	__u64 bpfnb_i_ = bpf_ktime_get_ns() / bpfnb_tseries_ns_(map);           \
	__u32 bpfnb_slot_ = bpfnb_i_ % bpfnb_max_entries_(map);                 \
	typeof(*(map)->value) *bpfnb_v_ = bpf_map_lookup_elem((map), &bpfnb_slot_); \
	if (bpfnb_v_) {                                                         \
		if (bpfnb_v_->interval != bpfnb_i_) {                           \
			bpfnb_v_->interval = bpfnb_i_;                          \
			bpfnb_v_->value = 0;                                    \
		}                                                               \
		bpfnb_v_->value += bpfnb_x_;                                    \
	}                                                                       \
})

/* Latency pairs (bpftrace's @start[tid] = nsecs ... nsecs - @start[tid]):
 * bpfnb_start() stores now under key; bpfnb_elapsed() returns the ns since then and
 * forgets the key, or -1 when nothing was started under it. */
#define BPFNB_START(name, keytype)                                              \
	struct {                                                                \
		__uint(type, BPF_MAP_TYPE_HASH);                                \
		__uint(max_entries, 0);                                         \
		__type(key, keytype);                                           \
		__type(value, __u64);                                           \
	} name SEC(".maps")

#define bpfnb_start(map, k) ({                                                  \
	typeof(*(map)->key) bpfnb_k_;                                           \
	__u64 bpfnb_now_ = bpf_ktime_get_ns();                                  \
	__builtin_memset(&bpfnb_k_, 0, sizeof(bpfnb_k_));                       \
	bpfnb_k_ = (k);                                                         \
	bpf_map_update_elem((map), &bpfnb_k_, &bpfnb_now_, BPF_ANY);            \
})

#define bpfnb_elapsed(map, k) ({                                                \
	typeof(*(map)->key) bpfnb_k_;                                           \
	__s64 bpfnb_d_ = -1;                                                    \
	__u64 *bpfnb_t_;                                                        \
	__builtin_memset(&bpfnb_k_, 0, sizeof(bpfnb_k_));                       \
	bpfnb_k_ = (k);                                                         \
	bpfnb_t_ = bpf_map_lookup_elem((map), &bpfnb_k_);                       \
	if (bpfnb_t_) {                                                         \
		bpfnb_d_ = bpf_ktime_get_ns() - *bpfnb_t_;                      \
		bpf_map_delete_elem((map), &bpfnb_k_);                          \
	}                                                                       \
	bpfnb_d_;                                                               \
})
/* --- end aggregations --- */

#endif /* __BPFNB_H__ */
