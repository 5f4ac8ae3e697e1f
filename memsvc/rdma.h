/* SPDX-License-Identifier: MIT */
/*
 * The RDMA page path of a memsvc client (library flit_memsvc_rdma; links
 * libibverbs and librdmacm). It rides on a struct memsvc_client that has
 * opened a namespace as its owner: RDMA_INFO over that connection gives the
 * region of the epoch held, one RC QP moves pages with one-sided READ and
 * WRITE through a registered bounce buffer, and RDMA_COMMIT over TCP makes
 * written pages stored (docs/memsvc.md, "RDMA").
 *
 * A struct memsvc_rdma belongs to one thread (no lock); the memsvc_client
 * under it keeps its own lock. Every call returns 0 or -errno with the
 * reason in memsvc_rdma_why. After a failed transfer (timeout, remote
 * access error, lost QP) the path is dead and every later call fails at
 * once: detach it, and attach again (after memsvc_reconnect if needed).
 */
#ifndef FLIT_MEMSVC_RDMA_H
#define FLIT_MEMSVC_RDMA_H

#include <stddef.h>
#include <stdint.h>

#include "memsvc/client.h"

#define MEMSVC_DEFAULT_RDMA_PORT 4611

struct memsvc_rdma;

/* 0 if this machine has an RDMA device, else -ENODEV with why set to
 * "no RDMA device on this machine (ibv_get_device_list found none)". */
int memsvc_rdma_probe(char *why, size_t whylen);

/* Attaches an RDMA path to c, which must hold a namespace (memsvc_open).
 * Checks for a device first (-ENODEV, as memsvc_rdma_probe), then asks for
 * the region (-EOPNOTSUPP if the service serves no RDMA, -ESTALE if c is
 * fenced), then connects (rdma_cm; -ECONNREFUSED if the service refused
 * the QP, -ETIMEDOUT after timeout_ms, 0 = 10 s). why: one line. */
int memsvc_rdma_attach(struct memsvc_client *c, int timeout_ms, struct memsvc_rdma **out, char *why,
		       size_t whylen);

/* The connect part of memsvc_rdma_attach, for a region the caller already
 * holds (from memsvc_rdma_info). A region of an epoch that was handed over
 * is refused by the service: -ECONNREFUSED. */
int memsvc_rdma_connect(struct memsvc_client *c, const struct memsvc_rdma_region *reg,
			int timeout_ms, struct memsvc_rdma **out, char *why, size_t whylen);

/* Disconnects and frees (tolerates NULL and a half-built path). The
 * memsvc_client stays as it is. */
void memsvc_rdma_detach(struct memsvc_rdma *r);

const char *memsvc_rdma_why(const struct memsvc_rdma *r);

/* The region the path was attached for. */
const struct memsvc_rdma_region *memsvc_rdma_region(const struct memsvc_rdma *r);

/* Reads n (<= MEMSVC_MAX_BATCH) pages one-sided into out[i * 4096]. A page
 * never written reads as zeros (no ZERO flag here); a page written
 * one-sided but not committed reads as whatever reached the service. */
int memsvc_rdma_read(struct memsvc_rdma *r, const uint64_t *gfn, unsigned n, void *out);

/* Writes n (<= MEMSVC_MAX_BATCH) pages one-sided, waits until they are
 * placed (a READ behind them on the same QP), then commits them over TCP:
 * 0 means stored, as memsvc_write. A fenced owner gets -EACCES (remote
 * access error) from the NIC, or -ESTALE from the commit. */
int memsvc_rdma_write(struct memsvc_rdma *r, const uint64_t *gfn, unsigned n,
		      const void *const *src);

/* The same without the commit: the pages are placed but not stored (for
 * tests of fencing, and callers that commit several batches at once). */
int memsvc_rdma_put(struct memsvc_rdma *r, const uint64_t *gfn, unsigned n, const void *const *src);

#endif
