/* What ppid_events cells send per getppid call of the traced process. */
#ifndef PPID_EVENTS_H
#define PPID_EVENTS_H

struct ppid_event {
	__u32 pid;
	__u32 seq;
};

#endif
