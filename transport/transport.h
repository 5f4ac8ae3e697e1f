/* SPDX-License-Identifier: MIT */
/*
 * The two ends of a migration data connection, behind an ops table so
 * that the way bytes reach and leave the wire can change (blocking calls,
 * io_uring, RDMA later) without the migration engine knowing.
 *
 * A sender builds each record in place: reserve(len) gives len bytes of the
 * transport's own (for io_uring: registered) memory, the caller fills them
 * (copying guest pages straight in, then checksumming the copy), and
 * commit(len) queues them behind everything committed before; or the record
 * ends with bytes sent from where they lie (commit_ext: guest pages, not
 * copied, not checksummed). Records leave
 * in commit order on the one socket. flush() returns when every committed
 * byte is with the kernel; a transport may send earlier. Errors are sticky:
 * after one, every call returns it, with the reason in t->why.
 *
 * Receiving: rx_open gives a transport that reads a connection, and
 * recv(len) puts exactly the next len bytes where the caller says: a page
 * run goes straight into guest RAM, with no copy on the way. The record
 * parsing above it (migrate/conn.c) is the same for every transport.
 *
 * The connection itself (TCP connect, accept, handshake) stays in
 * migrate/conn.c, the same for every transport so far; RDMA will add
 * connect ops here.
 */
#ifndef FLIT_TRANSPORT_TRANSPORT_H
#define FLIT_TRANSPORT_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct transport_ops;

/* The largest record a transport takes in one reserve. */
#define TRANSPORT_MAX_RECORD (300u << 10)

struct transport {
	const struct transport_ops *ops;
	int fd;		/* the connected socket (not the transport's to close) */
	int timeout_ms; /* a send that makes no progress this long fails */
	int err;	/* sticky: 0 or -errno */
	bool rx;	/* opened by rx_open: receives */
	char mode[32];	/* how it sends, for the report ("send", "send-zc", ...) */
	char why[160];
};

struct transport_ops {
	const char *name;
	/* A transport sending on fd. 0 or -errno (-ENOSYS, -EPERM: this
	 * kernel has no such transport). */
	int (*open)(int fd, int timeout_ms, struct transport **out);
	void *(*reserve)(struct transport *t, size_t len);
	int (*commit)(struct transport *t, size_t len);
	/* commit, and then ext_len bytes at ext follow the record's first
	 * len bytes on the wire, sent from where they lie (guest RAM): ext
	 * must stay mapped until flush returns, and bytes that change
	 * meanwhile may go out in either version. */
	int (*commit_ext)(struct transport *t, size_t len, const void *ext, size_t ext_len);
	int (*flush)(struct transport *t);
	/* Waits (bounded) for anything in flight, then frees t. */
	void (*close)(struct transport *t);

	/* A transport receiving on fd: nothing arriving for timeout_ms (0:
	 * no limit; t->timeout_ms may change later) is an error. */
	int (*rx_open)(int fd, int timeout_ms, struct transport **out);
	/* Exactly len bytes into buf. 0 or -errno: -ECONNRESET (the peer
	 * closed, or the socket was shut down), -ETIMEDOUT; why says it.
	 * Errors are not sticky: the caller decides. */
	int (*recv)(struct transport *t, void *buf, size_t len);
};

extern const struct transport_ops transport_sync;
extern const struct transport_ops transport_uring;

/* Blocking reads of fd until len bytes are in buf: the sync transport's
 * recv, and migrate/conn.c's for connections without one. sock: fd is a
 * socket, read with MSG_WAITALL (one wake-up for the whole length, not one
 * per segment that arrives); otherwise read(), so a captured stream file
 * does too. An SO_RCVTIMEO running out is -ETIMEDOUT. */
int transport_read_full(int fd, void *buf, size_t len, bool sock, char *why, size_t whylen);

/* By name ("sync", "uring"); NULL if there is none. */
const struct transport_ops *transport_find(const char *name);
/* The names, comma-separated, for help texts. */
const char *transport_names(void);

#endif
