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
 * A ring buffer reservation fails when the ring is full; the ring buffer helpers
 * then add 1 to bpfnb_lost, which EventStream.lost reports (perf buffers count their
 * losses themselves). A static .bss variable rather than a per-CPU map: libbpf 1.1
 * refuses static maps, and a global map would appear in every cell, while the
 * compiler drops this variable from cells that never use these helpers. */
static __u64 bpfnb_lost;

#define bpfnb_record_type(type) \
	asm volatile("" :: "r"(__builtin_btf_type_id(*(type *)0, 0)))

static __always_inline long __bpfnb_ringbuf_output(void *ringbuf, void *data, __u64 size)
{
	long err = bpf_ringbuf_output(ringbuf, data, size, 0);

	if (err)
		__sync_fetch_and_add(&bpfnb_lost, 1);
	return err;
}

#define bpfnb_ringbuf_output(ringbuf, data, size) ({		\
	bpfnb_record_type(typeof(*(data)));			\
	__bpfnb_ringbuf_output(ringbuf, data, size);		\
})

static __always_inline void *__bpfnb_ringbuf_reserve(void *ringbuf, __u64 size)
{
	void *record = bpf_ringbuf_reserve(ringbuf, size, 0);

	if (!record)
		__sync_fetch_and_add(&bpfnb_lost, 1);
	return record;
}

#define bpfnb_ringbuf_reserve(ringbuf, type) ({			\
	bpfnb_record_type(type);				\
	(type *)__bpfnb_ringbuf_reserve(ringbuf, sizeof(type));	\
})

#define bpfnb_perf_output(ctx, map, data, size) ({		\
	bpfnb_record_type(typeof(*(data)));			\
	bpf_perf_event_output(ctx, map, BPF_F_CURRENT_CPU, data, size); \
})
/* --- end events --- */

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

#endif /* __BPFNB_H__ */
