/* The lookup-or-insert idiom of libbpf-tools' programs. */
#ifndef __TEST_MAPS_BPF_H
#define __TEST_MAPS_BPF_H

#include <bpf/bpf_helpers.h>
#include <asm-generic/errno.h>

/* The entry of key, created from init if it is missing (another CPU may win the
 * race to create it: then its entry is the one returned). */
static __always_inline void *
bpf_map_lookup_or_try_init(void *map, const void *key, const void *init)
{
	void *val = bpf_map_lookup_elem(map, key);
	long err;

	if (val)
		return val;
	err = bpf_map_update_elem(map, key, init, BPF_NOEXIST);
	if (err && err != -EEXIST)
		return 0;
	return bpf_map_lookup_elem(map, key);
}

#endif /* __TEST_MAPS_BPF_H */
