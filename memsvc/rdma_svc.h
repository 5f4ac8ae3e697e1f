/* SPDX-License-Identifier: MIT */
/*
 * flit-memsvc's RDMA listener (docs/memsvc.md, "RDMA"): an rdma_cm listener
 * whose events the service's loop thread handles, one RC QP per client, and
 * one registration per namespace owner epoch. Single-threaded: every
 * function runs on the service's loop thread.
 *
 * Fencing: each (namespace, epoch) gets its own protection domain and its
 * own memory region over the namespace's pages. A QP is created in the PD
 * of the epoch named by its connect cookie, so it can only ever reach that
 * epoch's region. When a new owner takes the namespace, ms_rdma_fence
 * deregisters the old region at once: from then on every one-sided access
 * of the old owner fails in the NIC with a remote access error, whatever
 * rkey it tries. Its QPs are disconnected a few seconds later.
 */
#ifndef FLIT_MEMSVC_RDMA_SVC_H
#define FLIT_MEMSVC_RDMA_SVC_H

#include <stddef.h>
#include <stdint.h>

#include "memsvc/proto.h"
#include "memsvc/store.h"

struct ms_rdma;

/* Listens on "HOST[:PORT]" (port MEMSVC_DEFAULT_RDMA_PORT when none, 0 for
 * any). -ENODEV with why "no RDMA device on this machine (...)" when there
 * is no device or no rdma_cm; other -errno with the reason otherwise. */
int ms_rdma_open(const char *listen, struct ms_rdma **out, char *why, size_t whylen);

/* "HOST:PORT" bound. */
const char *ms_rdma_addr(const struct ms_rdma *r);

/* The rdma_cm event channel's descriptor (non-blocking): poll it for
 * POLLIN, then call ms_rdma_events. */
int ms_rdma_fd(const struct ms_rdma *r);

/* Handles every pending rdma_cm event (connects, disconnects). */
void ms_rdma_events(struct ms_rdma *r);

/* The region of ns for its current epoch (registered on first use) as an
 * RDMA_INFO_OK payload. The caller has checked that it talks to the current
 * owner. 0, or -ENOMEM/-EIO/-EOPNOTSUPP with why (registration refused). */
int ms_rdma_info(struct ms_rdma *r, struct ms_ns *ns, struct memsvc_rdma_info_wire *out, char *why,
		 size_t whylen);

/* ns has a new owner epoch: deregisters the regions of older epochs now.
 * Call after the epoch is set and before the new owner is answered. */
void ms_rdma_fence(struct ms_rdma *r, const struct ms_ns *ns);

/* Once a second: disconnects QPs of fenced epochs after a grace period. */
void ms_rdma_tick(struct ms_rdma *r);

/* Closes every QP, region and the listener (tolerates a half-built one). */
void ms_rdma_close(struct ms_rdma *r);

#endif
