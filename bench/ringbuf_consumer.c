/* The C baseline of bench_ringbuf.py, built by it with the system cc and -lbpf.
 *
 *   ringbuf_consumer drain MAP_ID EVENTS        consume EVENTS records already in the
 *                                               ring (ring_buffer__consume), copying
 *                                               each into an array
 *   ringbuf_consumer follow MAP_ID SECONDS      poll and copy for SECONDS, then drain
 *   ringbuf_consumer produce WHENCE PER_CALL SECONDS [CALLS_PER_SECOND]
 *                                               call lseek(-1, PER_CALL, WHENCE) in a
 *                                               loop for SECONDS (the bench's program
 *                                               emits PER_CALL records per call), as
 *                                               fast as it can or paced
 *
 * Prints one JSON object: {"events": N, "seconds": S} (drain adds "setup_seconds", the
 * part of S spent opening the ring; produce prints {"calls": N, "seconds": S}).
 */
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define RECORD_SIZE 32

struct sink {
	char *records;
	long count;
	long capacity;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int copy_record(void *ctx, void *data, size_t size)
{
	struct sink *sink = ctx;

	if (size != RECORD_SIZE || sink->count >= sink->capacity)
		return -1;
	memcpy(sink->records + sink->count * RECORD_SIZE, data, RECORD_SIZE);
	sink->count++;
	return 0;
}

static struct ring_buffer *open_ring(const char *id, struct sink *sink)
{
	int fd = bpf_map_get_fd_by_id(strtoul(id, NULL, 10));
	struct ring_buffer *rb;

	if (fd < 0) {
		perror("bpf_map_get_fd_by_id");
		exit(1);
	}
	rb = ring_buffer__new(fd, copy_record, sink, NULL);
	if (!rb) {
		perror("ring_buffer__new");
		exit(1);
	}
	return rb;
}

static int drain(const char *id, long events)
{
	struct sink sink = { malloc(events * RECORD_SIZE), 0, events };
	struct ring_buffer *rb;
	double start, mapped;

	/* Page faults out of the timing. Not 0: the compiler would make malloc + memset
	 * a calloc, which touches nothing. */
	memset(sink.records, 1, events * RECORD_SIZE);
	start = now();
	rb = open_ring(id, &sink);  /* mostly the mmap of the ring, twice its size */
	mapped = now();
	while (sink.count < events)
		if (ring_buffer__consume(rb) <= 0)
			break;
	printf("{\"events\": %ld, \"seconds\": %.6f, \"setup_seconds\": %.6f}\n",
	       sink.count, now() - start, mapped - start);
	ring_buffer__free(rb);
	free(sink.records);
	return sink.count == events ? 0 : 1;
}

static int follow(const char *id, double seconds)
{
	long capacity = 1L << 25;  /* 1 GiB of virtual memory, touched as it fills */
	struct sink sink = { malloc(capacity * RECORD_SIZE), 0, capacity };
	struct ring_buffer *rb = open_ring(id, &sink);
	double start = now();

	while (now() - start < seconds)
		if (ring_buffer__poll(rb, 50) < 0)
			break;
	ring_buffer__consume(rb);
	printf("{\"events\": %ld, \"seconds\": %.6f}\n", sink.count, now() - start);
	ring_buffer__free(rb);
	free(sink.records);
	return 0;
}

static int produce(int whence, long per_call, double seconds, double rate)
{
	double start = now(), ahead;
	long calls = 0;

	while (now() - start < seconds) {
		for (int i = 0; i < 1000; i++)
			lseek(-1, per_call, whence);
		calls += 1000;
		ahead = rate > 0 ? start + calls / rate - now() : 0;
		if (ahead > 0)
			usleep(ahead * 1e6);
	}
	printf("{\"calls\": %ld, \"seconds\": %.6f}\n", calls, now() - start);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "drain"))
		return drain(argv[2], atol(argv[3]));
	if (argc == 4 && !strcmp(argv[1], "follow"))
		return follow(argv[2], atof(argv[3]));
	if ((argc == 5 || argc == 6) && !strcmp(argv[1], "produce"))
		return produce(atoi(argv[2]), atol(argv[3]), atof(argv[4]),
			       argc == 6 ? atof(argv[5]) : 0);
	fprintf(stderr, "usage: %s drain MAP_ID EVENTS | follow MAP_ID SECONDS | "
		"produce WHENCE PER_CALL SECONDS [CALLS_PER_SECOND]\n", argv[0]);
	return 2;
}
