/* SPDX-License-Identifier: MIT */
/*
 * The Flit migration stream, version 1.0 (docs/stream.md has the sequence).
 *
 * Every connection of a migration (one control channel, N data channels)
 * starts with the stream header, then carries records. A record is a
 * 16-byte header {type, flags, length, crc, seq} in little-endian followed
 * by 'length' bytes of payload; crc is CRC-32C of the payload. A record
 * type the reader does not know is skipped if it has MIG_F_OPTIONAL, and is
 * an error otherwise. Everything read is untrusted: lengths are bounded,
 * page numbers checked against the layout, checksums verified before use.
 *
 *   source                                   destination
 *   ------ each connection ----------------------------------------------
 *   stream header, HELLO(role, channel, layout, nonce_s)  ->
 *                          <-  stream header, CHALLENGE(nonce_d, mac_d)
 *   AUTH(mac_s)                                           ->
 *                          <-  ACCEPT (or ERROR, and close)
 *     mac_d = HMAC-SHA256(token, "flit-dst" || nonce_s || session)
 *     mac_s = HMAC-SHA256(token, "flit-src" || nonce_d || session)
 *   ------ data channel k (pages with gfn / 512 % N == k) ---------------
 *   PAGES* ZERO* ... END(pages, zero pages)               ->
 *   ------ control channel ----------------------------------------------
 *   ROUND(n, pages)*, HEARTBEAT* ... (vCPUs paused) ...
 *     (the control channel is never silent for long: the destination's
 *     silence timeout lives there; data channels may idle through a round)
 *   CPU(i)*, VMSTATE, DEVICES, COMPLETE(rounds)           ->
 *                          <-  READY (restored, checked, not running)
 *   GO                                                    ->
 *                          <-  RESUMED(ns to resume)
 *   ERROR(code, text) may come from either side at any time; it ends the
 *   migration. Until READY, the source keeps its guest and resumes it on
 *   any failure; once it has sent GO it never runs its copy again, and the
 *   destination, once it has GO, never drops its guest: whatever breaks,
 *   at most one copy runs.
 */
#ifndef FLIT_MIGRATE_WIRE_H
#define FLIT_MIGRATE_WIRE_H

#include <stdint.h>

#define MIG_MAGIC	  0x3147494d54494c46ULL /* "FLITMIG1" */
#define MIG_VERSION_MAJOR 1
#define MIG_VERSION_MINOR 0

#define MIG_MAX_RECORD	  (16u << 20) /* any record's payload */
#define MIG_MAX_RUN_PAGES 64	      /* pages in one PAGES record */
#define MIG_MAX_CHANNELS  16
#define MIG_NONCE_LEN	  32
#define MIG_MAC_LEN	  32

enum mig_rec_type {
	MIG_REC_HELLO = 1,
	MIG_REC_CHALLENGE = 2,
	MIG_REC_AUTH = 3,
	MIG_REC_ACCEPT = 4,
	MIG_REC_PAGES = 10,
	MIG_REC_ZERO = 11,
	MIG_REC_END = 12,
	MIG_REC_ROUND = 13,
	MIG_REC_HEARTBEAT = 14,	 /* control, about once a second during a round */
	MIG_REC_MARK = 15,	 /* data: the end of a pre-copy round on this channel */
	MIG_REC_ROUND_DONE = 16, /* control, destination: every channel passed the MARK */
	MIG_REC_CPU = 20,
	MIG_REC_VMSTATE = 21,
	MIG_REC_DEVICES = 22,
	MIG_REC_COMPLETE = 30,
	MIG_REC_RESUMED = 31,
	MIG_REC_GUEST_STALL = 32,   /* optional: destination, after RESUMED */
	MIG_REC_POSTCOPY = 33,	    /* control, before COMPLETE: the rest comes after */
	MIG_REC_PAGE_REQ = 34,	    /* control, destination: a page the guest faulted on */
	MIG_REC_POSTCOPY_DONE = 35, /* control, destination: every page is in place */
	MIG_REC_DISCARD = 36,	    /* control, hybrid switch: pages the destination holds stale */
	MIG_REC_MEMSVC = 37,	    /* control, before COMPLETE: RAM is in memsvc; hot pages */
	MIG_REC_RECOVER = 38,	    /* control, destination: post-copy resumes; pages it has */
	MIG_REC_ADVISE = 39,	    /* control, both ways: post-copy comes; ready for it */
	MIG_REC_ERROR = 40,
	MIG_REC_READY = 41, /* control, destination: restored and checked, not running */
	MIG_REC_GO = 42,    /* control, source: run it; this copy never runs again */
};

#define MIG_F_OPTIONAL 0x0001 /* reader may skip it if unknown */
/* PAGES only: crc covers the struct mig_pages header, not the page data,
 * which the source sent straight from guest RAM (a page the guest changed
 * meanwhile is dirty and goes again; in the last round the vCPUs are
 * stopped). TCP's own checksum guards the data then. */
#define MIG_F_UNCHECKED 0x0002
#define MIG_F_KNOWN	(MIG_F_OPTIONAL | MIG_F_UNCHECKED)

/* RECOVER: a new control connection for a post-copy whose connections
 * broke after the switch; its HELLO carries the first one's session. */
enum mig_role { MIG_ROLE_CONTROL = 1, MIG_ROLE_DATA = 2, MIG_ROLE_RECOVER = 3 };

struct mig_stream_hdr {
	uint64_t magic;
	uint16_t major, minor;
	uint32_t flags;
};

struct mig_rec_hdr {
	uint16_t type;
	uint16_t flags;
	uint32_t len;
	uint32_t crc;
	uint32_t seq; /* per connection, from 0: a lost or reordered record is seen */
};

/* What the destination must build. */
struct mig_layout {
	uint64_t mem_size;
	uint32_t nr_vcpus;
	uint32_t page_size;
	uint32_t xsave_size;
	uint32_t nr_channels;
};

struct mig_hello {
	uint32_t role;	     /* enum mig_role */
	uint32_t channel;    /* 0 for control, 1..N for data */
	uint8_t session[16]; /* same on every connection of one migration */
	uint8_t nonce[MIG_NONCE_LEN];
	struct mig_layout layout;
};

struct mig_challenge {
	uint8_t nonce[MIG_NONCE_LEN];
	uint8_t mac[MIG_MAC_LEN];
};

struct mig_auth {
	uint8_t mac[MIG_MAC_LEN];
};

/* PAGES payload: this header, then count * 4096 bytes. */
struct mig_pages {
	uint64_t gfn;
	uint32_t count;
	uint32_t pad;
};

/* ZERO payload: this header, then BITMAP_WORDS(count) words: bit i set means
 * page gfn + i is all zero. */
struct mig_zero {
	uint64_t gfn;
	uint32_t count;
	uint32_t pad;
};

struct mig_end {
	uint64_t pages;
	uint64_t zero_pages;
};

struct mig_round {
	uint32_t round;
	uint32_t pad;
	uint64_t pages;
};

/* MARK and ROUND_DONE payload. The destination answers every ROUND with a
 * ROUND_DONE once each data channel has taken in that round's MARK: the
 * source waits for it before it stops the vCPUs, so that bytes still
 * queued in socket buffers are not drained inside the downtime. */
struct mig_mark {
	uint32_t round;
	uint32_t pad;
};

/* CPU payload: this header, then size bytes of struct x86_cpu_state. */
struct mig_cpu {
	uint32_t index;
	uint32_t size;
};

struct mig_complete {
	uint32_t rounds;
	uint32_t nr_cpus;
};

struct mig_resumed {
	uint64_t restore_ns; /* COMPLETE read -> vCPUs running, destination clock */
};

/* How long the guest saw itself stopped across the migration: the longest
 * gap, in host wall time, between two of its rounds since the migration
 * began (the memcheck guest measures it), taken once every vCPU has made a
 * round on the destination. known = 0: the guest does not measure it, or
 * it did not run a round within a second. */
struct mig_guest_stall {
	uint64_t stall_us;
	uint32_t known; /* bit 0: stall_us; bit 1: tail_speed */
	/* post-copy: the guest's speed while pages were still missing, in
	 * thousandths of its speed once every page was local */
	uint32_t tail_speed;
};

/* POSTCOPY payload: after COMPLETE the destination runs the guest with
 * the pages it lacks registered for faults; they come as PAGES answers to
 * PAGE_REQ on the control connection, and as the source's background push
 * (PAGES and ZERO, then END) on the data channels. */
struct mig_postcopy {
	uint32_t flags; /* POSTCOPY: MIG_POSTCOPY_F_*; ADVISE: 0 */
	uint32_t pad;
};
/* The destination's push takes its records in pieces of 16 pages, and
 * gives way to a fault being answered between them (policy postcopy-yield). */
#define MIG_POSTCOPY_F_YIELD 1u

/* RECOVER payload (the destination's first record on a recovered control
 * connection): this header, then BITMAP_WORDS(count) words: bit i set means
 * page gfn + i is in place at the destination. gfn is 0 and count the guest's
 * page count. The source pushes the rest; the destination asks again, by
 * PAGE_REQ, for every page a fault still waits on. */
struct mig_recover {
	uint64_t gfn;
	uint32_t count;
	uint32_t recoveries; /* this one's number, from 1 */
};

/* DISCARD payload: this header, then BITMAP_WORDS(count) words: bit i set
 * means the copy of page gfn + i the destination holds is stale (the guest
 * wrote it after it was sent); it is dropped at the switch and comes again
 * after it. One record or more, each a span of the bitmap (gfn a multiple
 * of 64, gfn + count at most the guest's pages). Before POSTCOPY (or, mode
 * memsvc, MEMSVC) only. */
struct mig_discard {
	uint64_t gfn;
	uint32_t count;
	uint32_t pad;
};

/* MEMSVC payload: this header, then nr_hot page numbers (uint64 each): the
 * guest's RAM above the first MiB is in the memsvc namespace of url, every
 * page written back; the destination takes the namespace over (a new
 * owner epoch fences the source), resumes, and reads the hot pages first.
 * Before COMPLETE only. */
#define MIG_MEMSVC_URL_MAX 192
#define MIG_MEMSVC_MAX_HOT (1u << 20)
struct mig_memsvc {
	char url[MIG_MEMSVC_URL_MAX]; /* memsvc://HOST:PORT/NS, NUL-terminated */
	uint64_t epoch;		      /* the source's, for the record */
	uint32_t nr_hot;
	uint32_t pad;
};

/* PAGE_REQ payload. */
struct mig_page_req {
	uint64_t gfn;
	uint32_t count;
	uint32_t pad;
};

/* POSTCOPY_DONE payload: the destination's view of the post-copy phase. */
struct mig_postcopy_done {
	uint64_t faults;    /* distinct pages the guest or the VMM faulted on */
	uint64_t pulled;    /* of them, placed (by their answer or the push) */
	uint64_t lat_us[5]; /* fault latency p50, p90, p99, p99.9, max */
	uint64_t placed_ns; /* resume -> last page placed */
	uint64_t twice;	    /* pages that arrived again once in place (EEXIST) */
};

/* ERROR payload: this header, then a text of up to 200 bytes (not NUL-terminated). */
struct mig_error {
	int32_t code; /* -errno */
	uint32_t pad;
};

_Static_assert(sizeof(struct mig_rec_hdr) == 16, "record header");
_Static_assert(sizeof(struct mig_stream_hdr) == 16, "stream header");
_Static_assert(sizeof(struct mig_hello) == 8 + 16 + 32 + 24, "hello");

#endif
