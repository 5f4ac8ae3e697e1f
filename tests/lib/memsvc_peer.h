/* SPDX-License-Identifier: MIT */
/*
 * Helpers for tests that talk to a real flit-memsvc process: start and stop
 * it on a loopback port, connect a client, speak the protocol by hand
 * (records a client library would never send), and page patterns that
 * tell every page and version apart.
 */
#ifndef FLIT_TESTS_MEMSVC_PEER_H
#define FLIT_TESTS_MEMSVC_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "memsvc/client.h"
#include "memsvc/proto.h"

/* A running flit-memsvc. */
struct memsvc_peer {
	pid_t pid;
	uint16_t port;
	char log[256];
};

/* Makes the folder /tmp/PREFIX-XXXXXX for logs and stores; at exit the
 * services still running (a failed case ends before its stop) are killed
 * and the folder removed. false (and a message) if it cannot be made. */
bool memsvc_peer_setup(const char *prefix);
/* That folder. */
const char *memsvc_peer_tmp(void);
/* Other children to kill at exit if a failed case leaves them running. */
void memsvc_peer_track(pid_t pid);
void memsvc_peer_untrack(pid_t pid);

/* Starts flit-memsvc on 127.0.0.1:port (0: any free one) with the further
 * arguments up to a NULL (at most 8), its log NAME.log in the folder; waits
 * for "listening on" and reads the port from that line. */
void memsvc_peer_start(struct memsvc_peer *s, const char *name, uint16_t port, ...)
    __attribute__((sentinel));
/* SIGTERM: it must exit 0. tail (may be NULL) gets the end of its log, for
 * the caller's own checks. */
void memsvc_peer_stop(struct memsvc_peer *s, char *tail, size_t len);
/* SIGKILL; its exit status (128 + SIGKILL), -1 if it was not running. */
int memsvc_peer_kill(struct memsvc_peer *s);

/* A client of the service on 127.0.0.1:port (5 s timeout). */
struct memsvc_client *memsvc_peer_connect(uint16_t port);

/* ---- the protocol by hand ---- */

/* A connection to 127.0.0.1:port, receives time out after 5 s. */
int raw_connect(uint16_t port);
void raw_send(int fd, const void *buf, size_t len);
/* One record (payload at most 1024 bytes), its CRC correct unless bad_crc. */
void raw_record(int fd, uint8_t type, uint32_t id, const void *p, uint32_t len, bool bad_crc);
/* Exactly len bytes; false if the connection ended first. */
bool raw_read(int fd, void *buf, size_t len);
/* One answer: its header, its payload into payload (cap bytes; NULL: a
 * buffer of the helper's), and the error code and message if it is ERROR
 * (else 0 and ""). false if the connection ended first. */
bool raw_answer(int fd, struct memsvc_hdr *h, void *payload, size_t cap, uint32_t *code, char *msg,
		size_t msglen);
/* HELLO for version 1, which must be accepted; the features offered. */
uint32_t raw_hello(int fd);
/* OPEN of ns with token, which must be accepted. */
void raw_open(int fd, const char *ns, const char *token);

/* ---- page patterns ---- */

/* Page gfn of namespace ns at version v: every 8-byte word differs. */
void page_fill(uint8_t *p, unsigned ns, uint64_t gfn, unsigned v);
bool page_check(const uint8_t *p, unsigned ns, uint64_t gfn, unsigned v);
bool page_all_zero(const uint8_t *p);

#endif
