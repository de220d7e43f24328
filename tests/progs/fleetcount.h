/* What fleetcount.bpf.c counts: UDP packets by destination port. */
#ifndef FLEETCOUNT_H
#define FLEETCOUNT_H

struct port_key {
	__u16 dport;
	__u16 pad;
};

/* one per counted packet, in the ring buffer "events" */
struct event {
	__u16 dport;
	__u16 len;	/* UDP length: header and payload */
	__u32 ifindex;
};

#endif
