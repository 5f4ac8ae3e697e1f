/* SPDX-License-Identifier: MIT */
/*
 * Live migration, pre-copy. The stream and its message sequence are in
 * migrate/wire.h and docs/stream.md.
 *
 * Source: mig_source_run takes over a running VM for the migration's
 * duration. On success the guest runs on the destination and the source VM
 * is left paused, for the caller to destroy. On any failure (peer gone,
 * protocol error, timeout, cancel) the source VM is handed back running and
 * untouched: the migration never costs the guest.
 *
 * Destination: mig_dest_run accepts one migration, builds the VM from the
 * layout in the stream (checked against what the caller allows), receives
 * memory and state, and resumes the guest. On failure nothing is kept.
 */
#ifndef FLIT_MIGRATE_MIGRATE_H
#define FLIT_MIGRATE_MIGRATE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "vmm/mem.h"

struct vm;
struct mig_policy_ops;
struct transport_ops;
struct hv_ops;

#define MIG_TOKEN_MAX 256

/* Live progress of a running migration, written by the session thread,
 * read by anyone (every field read and written atomically). */
struct mig_progress {
	uint32_t phase; /* enum mig_phase */
	uint32_t round;
	uint64_t pages_sent;
	uint64_t bytes;
	uint64_t dirty_pages; /* left after the last round */
	uint64_t dirty_rate_pps;
	uint64_t est_downtime_us;
	uint64_t bandwidth_bps; /* bytes/s, last round */
	uint32_t throttle_pct;
	uint32_t pad;
};

enum mig_phase {
	MIG_PHASE_NONE,
	MIG_PHASE_SETUP,
	MIG_PHASE_ITERATE,
	MIG_PHASE_STOP_COPY,
	MIG_PHASE_POSTCOPY,
	MIG_PHASE_DONE,
	/* post-copy broke after the switch: waiting to reconnect */
	MIG_PHASE_POSTCOPY_PAUSED,
};

enum mig_mode {
	MIG_MODE_PRECOPY,  /* rounds while the guest runs, then stop and copy */
	MIG_MODE_POSTCOPY, /* switch at once; pages follow on demand and pushed */
	MIG_MODE_HYBRID,   /* pre-copy rounds while they pay, then post-copy */
	MIG_MODE_MEMSVC,   /* RAM in memsvc: move the cache, hand the namespace over */
};

/* Mode memsvc: where the source's cache (its resident pages) goes. */
enum mig_memsvc_cache {
	/* To the destination, in pre-copy rounds: it resumes with the same
	 * warm cache, and nothing is written back (default). */
	MIG_MEMSVC_SEND,
	/* Back to memsvc, in write-back rounds: only state and a hot list
	 * cross to the destination, which fetches the rest from memsvc. */
	MIG_MEMSVC_WRITEBACK,
};

struct remote_mem;

struct mig_params {
	const char *addr; /* "tcp:HOST:PORT" */
	enum mig_mode mode;
	unsigned channels; /* data connections, 1..MIG_MAX_CHANNELS */
	uint8_t token[MIG_TOKEN_MAX];
	size_t token_len;	    /* 0: refuse to run (a token is required) */
	uint32_t downtime_limit_ms; /* stop iterating when the estimate is under it */
	uint32_t max_rounds;
	uint64_t bandwidth_limit; /* bytes/s over all channels, 0: none */
	bool auto_converge;
	/* Checksum page data too (copy, then CRC32C), not only every
	 * record's metadata: costs a copy and a checksum per byte. */
	bool checksum_pages;
	int timeout_ms;			     /* network silence that fails the migration */
	const struct mig_policy_ops *policy; /* NULL: precopy-default */
	/* How data channels send: NULL is io_uring, falling back to plain
	 * sends where io_uring is missing; set, that one or fail. */
	const struct transport_ops *transport;
	volatile int *cancel; /* set non-zero (any thread) to cancel */
	/* set non-zero (any thread) to switch a running pre-copy to post-copy
	 * after the current round */
	volatile int *postcopy_now;
	struct mig_progress *progress; /* optional: updated as the migration goes */
	struct remote_mem *remote;     /* the guest's RAM is in memsvc (vmm/remote.h) */
	enum mig_memsvc_cache memsvc_cache;
	/* Post-copy recovery. When the connection breaks after the switch,
	 * the guest waits at the destination for the pages it lacks and every
	 * page is still here: keep them, and reconnect (every second, and at
	 * once when *recover_now is set, then at recover_addr if that is set
	 * and not empty) for up to recover_ms; 0: no recovery, the guest is
	 * lost at once. */
	int recover_ms;
	volatile int *recover_now;
	const char *recover_addr;
	/* Tests only: pages a fault's answer brings along (prefetch) are
	 * taken out of the push, then held this long before they go, so that
	 * the push's end reaches the destination before they do. */
	unsigned test_prefetch_delay_ms;
};

/* "precopy", "postcopy", "hybrid", "memsvc", and back (-1: none). */
const char *mig_mode_name(enum mig_mode m);
int mig_mode_parse(const char *name);

/* "send" / "writeback", and back (-1: neither). */
const char *mig_memsvc_cache_name(enum mig_memsvc_cache c);
int mig_memsvc_cache_parse(const char *name);

/* Fills p with the defaults: 2 channels, 20 ms, 30 rounds, auto-converge,
 * 10 s timeout. */
void mig_params_default(struct mig_params *p);

struct mig_dest_params {
	const char *addr; /* listen address */
	int listen_fd;	  /* or an already listening socket (>= 0) */
	uint8_t token[MIG_TOKEN_MAX];
	size_t token_len;
	uint64_t mem_size; /* 0: accept the source's; else must match */
	uint32_t nr_vcpus; /* 0: accept the source's; else must match */
	enum mem_backing backing;
	const char *dirty_track;
	int accept_timeout_ms;	 /* < 0: wait forever */
	bool start_paused;	 /* restore, tell the source, but leave vCPUs paused */
	const struct hv_ops *hv; /* NULL: KVM (unit tests use a fake) */
	bool prealloc;		 /* fault in the VM's RAM before pages arrive */
	/* How data channels receive (NULL: mig_dest_transport_default). */
	const struct transport_ops *transport;
	/* Set to 1 once the destination listens and any early VM is built
	 * (then a source that connects pays for the migration alone). */
	int *ready;
	int timeout_ms;
	/* A guest whose RAM is in memsvc: the namespace's address if not the
	 * source's (NULL: the source's), the resident budget, and where the
	 * remote memory goes once the guest runs here. */
	const char *memsvc_url;
	uint64_t cache_bytes;
	struct remote_mem **remote_out;
	/* Post-copy: after the connection breaks, how long (ms) the guest
	 * waits for the source to reconnect (0: it is lost at once). */
	int recover_ms;
	/* Tests only: after GO, run the guest but never send RESUMED (as if
	 * it were lost on the way). */
	bool drop_resumed;
	/* Tests only: take GO, then act as if it had not come (the connection
	 * breaks first): post-copy waits for the source to reconnect. */
	bool lose_go;
	/* Tests only: fail once the memsvc namespace is taken, before READY
	 * (as if this process died there). */
	bool fail_after_take;
};

void mig_dest_params_default(struct mig_dest_params *p);
/* The receiving transport a destination uses unless told. */
extern const struct transport_ops *const mig_dest_transport_default;

/* One round of a migration, for the report's timeline. Times in ms from the
 * migration's start. */
struct mig_round_rec {
	double start_ms, end_ms;
	uint64_t pages, bytes;
	uint64_t dirty_pages; /* left after it (0 for the last, stopped round) */
	uint32_t throttle_pct;
	bool stopped; /* the stop-and-copy round, vCPUs paused */
};

#define MIG_TIMELINE_MAX 64

/* The final report, the same fields for every mode. Times in ms. */
struct mig_report {
	char mode[16];
	/* "completed"; "failed" or "cancelled" (the guest runs on at the
	 * source); "lost" (post-copy broke after the switch); "unconfirmed"
	 * (the destination was told to run it and did not say it does: the
	 * source keeps its copy paused, never runs it) */
	char status[16];
	char error[240];
	double total_ms, downtime_ms, setup_ms, restore_ms;
	/* The longest stop the guest saw (memcheck), from the destination;
	 * < 0 unknown (reported as null). */
	double guest_stall_ms;
	uint32_t rounds;
	uint64_t bytes, pages_sent, pages_resent, zero_pages;
	double throughput_mbps, dirty_rate_pps;
	uint32_t throttle_pct; /* auto-converge level at the end */
	char transport[16];    /* "tcp/uring", "tcp/sync" */
	char send_mode[32];    /* how the data channels sent, e.g. "send-zc" */
	uint32_t channels;
	bool page_checksums;
	char dirty_track[16];
	char backend[16];
	uint64_t mem_size;
	uint32_t nr_vcpus;
	/* What happened when: the rounds (the first MIG_TIMELINE_MAX), the
	 * vCPUs paused here and running at the destination (ms from start;
	 * < 0 if it did not happen). */
	uint32_t nr_timeline;
	struct mig_round_rec timeline[MIG_TIMELINE_MAX];
	double paused_at_ms, resumed_at_ms;
	/* post-copy: switch -> every page placed, faults, pages pulled by
	 * them, fault latency (fault read -> page placed) p50, p90, p99,
	 * p99.9, max in µs */
	double postcopy_ms;
	uint64_t faults, pages_pulled;
	uint64_t fault_lat_us[5];
	/* memsvc: pages written back while the guest ran and while paused,
	 * hot pages named to the destination */
	uint64_t written_back, written_paused, hot_pages;
	uint64_t discarded;    /* memsvc, cache sent: stale copies the destination dropped */
	char memsvc_cache[12]; /* memsvc: "send" or "writeback" */
	/* memsvc, failed: the destination had taken the namespace and this
	 * source took it back (its guest runs on) */
	bool retaken;
	/* connections re-made after a break (post-copy, or between GO and
	 * RESUMED), and the time spent waiting for them */
	uint32_t recoveries;
	double recover_wait_ms;
	/* destination, post-copy: the push came in pieces, giving way to
	 * faults (policy postcopy-yield) */
	bool push_yields;
	char policy[24];	   /* the policy's name */
	uint64_t pages_prefetched; /* post-copy: sent along with a fault's answer */
	uint64_t pages_twice;	   /* post-copy: arrived again once in place (placed once) */
	/* post-copy: the guest's speed (test guests' rounds) while pages were
	 * missing, in % of its speed once all were local; < 0 unknown */
	double tail_speed_pct;
};

int mig_source_run(struct vm *vm, const struct mig_params *p, struct mig_report *rep);
int mig_dest_run(const struct mig_dest_params *p, struct vm **out, struct mig_report *rep);

/* A destination on its own thread (the caller goes on, e.g. to run the
 * source in the same process: tests, benchmarks). Fill t->p, spawn, join;
 * then t->r, t->vm and t->rep hold mig_dest_run's results. */
struct mig_dest_thread {
	struct mig_dest_params p;
	pthread_t thread;
	struct vm *vm;
	struct mig_report rep;
	int r;
};
int mig_dest_spawn(struct mig_dest_thread *t);
void mig_dest_join(struct mig_dest_thread *t);

/* One JSON object, one line. */
void mig_report_json(const struct mig_report *r, FILE *f);
/* The same as a json-c object (the caller puts it). */
struct json_object *mig_report_to_json(const struct mig_report *r);

/* Reads a token file: its bytes up to the first newline, 16..256 of them. */
int mig_read_token(const char *path, uint8_t *token, size_t *len);

#endif
