/* SPDX-License-Identifier: MIT */
/*
 * The memsvc client: one connection to flit-memsvc, one namespace, blocking
 * request/response (one request in flight; a mutex makes a connection safe
 * to share between threads, but each hot path should own its connection).
 *
 * A namespace is an array of nr_pages 4 KiB pages, zero until written. Its
 * owner is one client at a time: memsvc_open with epoch 0 takes ownership
 * and makes a new epoch, which fences every earlier owner (their requests
 * are refused with -ESTALE from then on); memsvc_open with the epoch a
 * client already held takes it back after a lost connection, and only if no
 * one has taken the namespace since.
 *
 * Every call returns 0 or -errno; memsvc_why gives the reason in words (the
 * service's own message when it refused). Service refusals map to:
 *   -ENOENT  no such namespace          -EEXIST  namespace exists
 *   -EACCES  wrong token                -ESTALE  a newer owner holds it
 *   -ENOSPC  over the namespace limit   -ERANGE  page number out of range
 *   -E2BIG   batch too large            -EPROTO  malformed request/answer
 *   -EOPNOTSUPP  no RDMA on the service (the RDMA calls below)
 * A lost connection gives -ECONNRESET, -EPIPE or -ETIMEDOUT; the client is
 * then unusable until memsvc_reconnect succeeds.
 */
#ifndef FLIT_MEMSVC_CLIENT_H
#define FLIT_MEMSVC_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MEMSVC_PAGE	    4096u
#define MEMSVC_MAX_BATCH    64u /* pages in one read or write request */
#define MEMSVC_PIPELINE	    8u	/* requests on the wire at once (the *_many calls) */
#define MEMSVC_DEFAULT_PORT 4610
#define MEMSVC_NAME_MAX	    63u	 /* namespace name: bytes of [A-Za-z0-9._-], no leading '.' */
#define MEMSVC_TOKEN_MAX    255u /* token: 1 to this many bytes */

struct memsvc_client;

struct memsvc_ns_info {
	uint64_t nr_pages;    /* size of the namespace */
	uint64_t limit_pages; /* at most this many written pages */
	uint64_t used_pages;  /* pages written (stored) */
	uint64_t epoch;	      /* the current owner's epoch */
};

/* Connects (TCP, TCP_NODELAY; timeout_ms for the connect and for every
 * answer afterwards, 0 = 10 s). NULL and *err (-errno) on failure, with the
 * reason in why. */
struct memsvc_client *memsvc_connect(const char *host, uint16_t port, int timeout_ms, int *err,
				     char *why, unsigned whylen);
void memsvc_close(struct memsvc_client *c);
const char *memsvc_why(const struct memsvc_client *c);

/* Creates a namespace (the caller does not own it yet). limit_pages 0 means
 * nr_pages. */
int memsvc_create(struct memsvc_client *c, const char *ns, const char *token, uint64_t nr_pages,
		  uint64_t limit_pages);

/* Opens ns as its owner. *epoch: in 0 to take ownership anew, or the epoch
 * held before to take it back; out the epoch now held. info may be NULL. */
int memsvc_open(struct memsvc_client *c, const char *ns, const char *token, uint64_t *epoch,
		struct memsvc_ns_info *info);

/* Deletes ns and every page in it (the token is the proof). -EBUSY when
 * another connection owns it now (a guest runs on it: stop that guest, or
 * take the namespace with memsvc_open first); -ENOENT, -EACCES as open;
 * -EOPNOTSUPP from a service older than this call. Connections that had
 * it open get -ENOENT from then on. */
int memsvc_delete(struct memsvc_client *c, const char *ns, const char *token);

struct memsvc_ns_entry {
	char name[MEMSVC_NAME_MAX + 1];
	struct memsvc_ns_info info;
	bool owned; /* a connection holds it at the current epoch */
};
/* The namespaces created with token, in name order, at most max of them
 * (*n filled in). */
int memsvc_list(struct memsvc_client *c, const char *token, struct memsvc_ns_entry *out, size_t max,
		size_t *n);

/* The open namespace's numbers (any owner state; a stale owner gets
 * -ESTALE). */
int memsvc_info(struct memsvc_client *c, struct memsvc_ns_info *info);

/* Reads n (<= MEMSVC_MAX_BATCH) pages into out[i * 4096]. zero may be NULL;
 * else zero[i] is set when the page was never written (out is zeroed
 * then too). */
int memsvc_read(struct memsvc_client *c, const uint64_t *gfn, unsigned n, void *out, bool *zero);

/* Writes n (<= MEMSVC_MAX_BATCH) pages, page i from src[i]; when it returns
 * 0 the service has stored them (and, with a backing file, they survive a
 * restart of the service). */
int memsvc_write(struct memsvc_client *c, const uint64_t *gfn, unsigned n, const void *const *src);

/* Any number of pages, as memsvc_read and memsvc_write would in batches of
 * MEMSVC_MAX_BATCH, with up to MEMSVC_PIPELINE requests on the wire at once
 * (the service answers in order): the link and the service stay busy while
 * answers travel. 0 once every batch is done. A refusal stops the sending
 * and returns the first one (with its reason); batches sent before it may
 * or may not be done, so the caller treats the whole call as failed. */
int memsvc_write_many(struct memsvc_client *c, const uint64_t *gfn, size_t n,
		      const void *const *src);
int memsvc_read_many(struct memsvc_client *c, const uint64_t *gfn, size_t n, void *out, bool *zero);

/* Connects again to the same service and reopens the namespace with the
 * epoch held (see memsvc_open); -ESTALE if another owner took it. */
int memsvc_reconnect(struct memsvc_client *c);
/* Connects again and opens the namespace this client had open with *epoch:
 * 0 takes it as its new owner (fencing whoever holds it now) and sets
 * *epoch to the new epoch; another value joins that epoch. For a
 * migration's source whose destination took the namespace, then failed
 * before its guest ran. */
int memsvc_retake(struct memsvc_client *c, uint64_t *epoch);

/* The memsvc token for a Flit secret (a --token-file's bytes): their hex,
 * so any bytes will do; a secret over 127 bytes, whose hex would not fit
 * MEMSVC_TOKEN_MAX, gives "sha256:" and the hex of its SHA-256. out needs
 * MAX(2 * len + 1, 72) bytes. */
void memsvc_token_text(const uint8_t *secret, size_t len, char *out);

/* Parses "memsvc://HOST[:PORT]/NAMESPACE" (port defaults to
 * MEMSVC_DEFAULT_PORT). 0 or -EINVAL with why set. */
int memsvc_parse_url(const char *url, char *host, unsigned hostlen, uint16_t *port, char *ns,
		     unsigned nslen, char *why, unsigned whylen);

/* ---- one-sided access (RDMA), docs/memsvc.md "RDMA" ----
 * The TCP connection stays in charge: it opens the namespace, hands out the
 * region of the epoch held and stores what was written one-sided. The verbs
 * side (connect, READ, WRITE) is memsvc/rdma.h. */

/* The open namespace as an RDMA target, good for one owner epoch. */
struct memsvc_rdma_region {
	uint64_t epoch;	   /* the owner epoch the rkey is valid for */
	uint64_t addr;	   /* remote address of page 0 */
	uint64_t nr_pages; /* pages in the region (the namespace's size) */
	uint64_t cookie;   /* rdma_cm private data that binds a QP to this epoch */
	uint32_t rkey;
	uint16_t cm_port; /* the service's rdma_cm listener */
	char cm_host[64]; /* its host; "" means the host of the TCP connection */
};

/* True if the service said in HELLO_OK that it serves RDMA. */
bool memsvc_has_rdma(const struct memsvc_client *c);

/* The host name or address given to memsvc_connect. */
const char *memsvc_host(const struct memsvc_client *c);

/* Asks for the open namespace's region (RDMA_INFO). Only the current owner
 * gets it: -EINVAL before an open, -ESTALE once fenced, -EOPNOTSUPP when the
 * service has no RDMA listener; -EPROTO (connection closed) if the answer
 * does not fit the namespace and epoch held. */
int memsvc_rdma_info(struct memsvc_client *c, struct memsvc_rdma_region *out);

/* Checks an RDMA_INFO_OK payload (untrusted) against the epoch and size the
 * client holds and fills out: -EPROTO if malformed (size, an address range
 * that wraps, a length other than nr_pages pages, a bad listener host or
 * port 0), -ESTALE if it is for another epoch. why gets the reason. Pure:
 * no I/O, any thread. */
int memsvc_rdma_region_parse(const void *payload, size_t len, uint64_t epoch, uint64_t nr_pages,
			     struct memsvc_rdma_region *out, char *why, unsigned whylen);

/* The remote address of pages [gfn, gfn + n) of r: 0, or -ERANGE if n is 0
 * or the run does not lie wholly inside the region. Pure. */
int memsvc_rdma_addr(const struct memsvc_rdma_region *r, uint64_t gfn, uint64_t n, uint64_t *addr);

/* Tells the service that pages written one-sided are complete (RDMA_COMMIT):
 * when it returns 0 they are stored exactly as a memsvc_write would have
 * stored them (present, counted against the limit, synced with --sync).
 * The caller must have seen its RDMA writes complete first, ordered by a
 * later RDMA READ on the same QP (memsvc_rdma_write does both). Refusals as
 * memsvc_write, and -EOPNOTSUPP without an RDMA listener. */
int memsvc_rdma_commit(struct memsvc_client *c, const uint64_t *gfn, unsigned n);

#endif
