/* SPDX-License-Identifier: MIT */
/*
 * One connection of a migration: a TCP socket speaking the records of
 * migrate/wire.h. Sending gathers header, run header and guest pages into
 * one sendmsg (pages go from guest RAM to the socket without a copy);
 * receiving reads a record header, checks it (length bound, sequence), and
 * reads the payload into the caller's buffer, or a page run straight into
 * guest RAM, then verifies its checksum. 0 or -errno everywhere; a peer that
 * breaks the protocol gets -EPROTO with the reason in conn->why.
 */
#ifndef FLIT_MIGRATE_CONN_H
#define FLIT_MIGRATE_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "wire.h"

struct transport;
struct transport_ops;

#define MIG_CONN_INIT                      \
	{                                  \
		.fd = -1, .capture_fd = -1 \
	}

struct mig_conn {
	int fd;
	int capture_fd; /* if >= 0, every byte sent is also written here */
	uint32_t tx_seq, rx_seq;
	uint64_t tx_bytes, rx_bytes;
	/* If set, records go out through this transport (data channels);
	 * otherwise by gathered sendmsg (control channel, tests). */
	struct transport *tx;
	/* If set, bytes come in through this transport (data channels at the
	 * destination); otherwise by read(). */
	struct transport *rx;
	char why[200];
};

/* "tcp:HOST:PORT" -> host, port. -EINVAL for anything else. */
int mig_parse_addr(const char *addr, char *host, size_t hostlen, uint16_t *port);

/* Listening socket on addr (port 0: any; *port_out gets the real one). */
int mig_listen(const char *addr, uint16_t *port_out);
/* Accept with a timeout (ms, < 0: none). */
int mig_accept(int lfd, int timeout_ms, struct mig_conn *c);
int mig_connect(const char *addr, int timeout_ms, struct mig_conn *c);
void mig_conn_close(struct mig_conn *c);
/* A connection over any readable fd (a captured stream file, a pipe). */
void mig_conn_init_fd(struct mig_conn *c, int fd);
/* Timeout for every later send and receive (ms, 0: none). */
int mig_conn_set_timeout(struct mig_conn *c, int timeout_ms);
int mig_conn_set_timeouts(struct mig_conn *c, int recv_ms, int send_ms);

/* From here on, records go out through a transport of kind ops. */
int mig_conn_attach(struct mig_conn *c, const struct transport_ops *ops, int timeout_ms);
/* From here on, bytes come in through a transport of kind ops (nothing
 * for timeout_ms: an error; mig_conn_set_timeouts changes it). */
int mig_conn_attach_rx(struct mig_conn *c, const struct transport_ops *ops, int timeout_ms);
/* Everything sent is with the kernel (a no-op without a transport). */
int mig_conn_flush(struct mig_conn *c);

int mig_send_stream_hdr(struct mig_conn *c);
int mig_recv_stream_hdr(struct mig_conn *c);

/* A record whose payload is the concatenation of iov[0..n). */
int mig_send_iov(struct mig_conn *c, uint16_t type, const struct iovec *iov, int n);
/* The same with header flags (MIG_F_OPTIONAL). */
int mig_send_iov_flags(struct mig_conn *c, uint16_t type, uint16_t flags, const struct iovec *iov,
		       int n);
int mig_send_rec(struct mig_conn *c, uint16_t type, const void *payload, uint32_t len);
/* A PAGES record of count pages from src (guest RAM) at gfn. checked: the
 * pages are copied into the transport's buffer and checksummed there, so a
 * guest writing them meanwhile cannot make the record lie. Otherwise they
 * go from guest RAM as they are (MIG_F_UNCHECKED), src mapped until
 * mig_conn_flush. Without a transport, src must not change meanwhile. */
int mig_send_pages(struct mig_conn *c, uint64_t gfn, const void *src, uint32_t count, bool checked);
/* An ERROR record with a printf-style text; best effort. */
void mig_send_error(struct mig_conn *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Next record header. Skips optional unknown records. */
int mig_recv_hdr(struct mig_conn *c, struct mig_rec_hdr *h);
/* The payload of a record whose header was just read, into buf (len must be
 * h->len exactly), checksum verified. */
int mig_recv_payload(struct mig_conn *c, const struct mig_rec_hdr *h, void *buf, size_t len);
/* Reads a record that must be of 'type' with a payload of exactly len. An
 * ERROR record instead becomes -ECONNABORTED with the peer's text in why. */
int mig_recv_expect(struct mig_conn *c, uint16_t type, void *buf, size_t len);

/* How much of the record's payload its crc covers: all of it, or only the
 * PAGES header of a MIG_F_UNCHECKED record. */
size_t mig_rec_checked_len(const struct mig_rec_hdr *h);

/* The ERROR record whose header was just read: its text goes to why, after
 * "who: ". Returns -ECONNABORTED (or the error reading it). */
int mig_recv_error(struct mig_conn *c, const struct mig_rec_hdr *h, const char *who);

/* Receives payload bytes in pieces: start with crc 0, feed every part that
 * the crc covers, then mig_recv_crc_check; crc NULL: a part it does not
 * cover. */
int mig_recv_part(struct mig_conn *c, void *buf, size_t len, uint32_t *crc);
/* The record type's name ("PAGES"), or NULL for a type this version does
 * not know. */
const char *mig_rec_name(uint16_t t);
int mig_recv_crc_check(struct mig_conn *c, const struct mig_rec_hdr *h, uint32_t crc);

#endif
