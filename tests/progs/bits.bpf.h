/* Slot numbers of log2 histograms, as libbpf-tools' programs compute them: slot k
 * counts [2^k, 2^(k+1)), with 0 and 1 both in slot 0; callers clamp to MAX_SLOTS - 1. */
#ifndef __TEST_BITS_BPF_H
#define __TEST_BITS_BPF_H

/* floor(log2(v)) of a 32-bit value, branch-free (the verifier sees no loop). */
static __always_inline __u64 log2(__u32 v)
{
	__u32 r, step;

	r = (v > 0xFFFF) << 4;
	v >>= r;
	step = (v > 0xFF) << 3;
	v >>= step;
	r |= step;
	step = (v > 0xF) << 2;
	v >>= step;
	r |= step;
	step = (v > 0x3) << 1;
	v >>= step;
	r |= step;
	return r | (v >> 1);
}

static __always_inline __u64 log2l(__u64 v)
{
	__u32 high = v >> 32;

	return high ? log2(high) + 32 : log2(v);
}

#endif /* __TEST_BITS_BPF_H */
