/* What fleetcount.bpf.c counts: UDP packets by destination port. */
#ifndef FLEETCOUNT_H
#define FLEETCOUNT_H

struct port_key {
	__u16 dport;
	__u16 pad;
};

#endif
