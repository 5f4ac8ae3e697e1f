/* SPDX-License-Identifier: MIT */
/*
 * flit-memsvc's service: one thread, one io_uring loop (common/loop.h) that
 * accepts, receives and sends for every client, over the page store of
 * memsvc/store.h. Protocol: memsvc/proto.h and docs/memsvc.md.
 */
#ifndef FLIT_MEMSVC_SERVER_H
#define FLIT_MEMSVC_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct memsvc_server;

struct memsvc_server_opts {
	const char *listen;  /* [tcp:]HOST[:PORT], port 0 = any free one */
	const char *rdma;    /* NULL, or the rdma_cm listener HOST[:PORT] (one-sided pages) */
	const char *dir;     /* NULL: pages in memory only */
	bool sync;	     /* fdatasync before acknowledging a write */
	uint64_t max_mem;    /* cap on the sum of namespace limits (bytes), 0 = none */
	int send_timeout_ms; /* a client that does not take an answer this long is dropped; 0 = 10 s
			      */
};

/* "[tcp:]HOST[:PORT]" or "[tcp:][V6ADDR][:PORT]" into host and port
 * (MEMSVC_DEFAULT_PORT when absent). 0 or -EINVAL. */
int memsvc_parse_listen(const char *arg, char *host, size_t hostlen, uint16_t *port);

/* Loads the store and binds the listening socket (and the RDMA listener
 * with o->rdma). 0 or -errno with a one-line reason in why (e.g.
 * "127.0.0.1:4610: Address already in use"); -ENODEV when o->rdma is set
 * and this machine has no RDMA device. */
int memsvc_server_create(const struct memsvc_server_opts *o, struct memsvc_server **out, char *why,
			 size_t whylen);

/* "HOST:PORT" actually bound (the port chosen when 0 was asked). */
const char *memsvc_server_addr(const struct memsvc_server *s);

/* Serves on the calling thread until stop_fd becomes readable (an eventfd
 * or a signalfd). Logs "listening on HOST:PORT" when it starts accepting.
 * 0 or -errno if the loop itself failed. */
int memsvc_server_run(struct memsvc_server *s, int stop_fd);

/* Closes every connection and the store (tolerates a half-built server). */
void memsvc_server_destroy(struct memsvc_server *s);

#endif
