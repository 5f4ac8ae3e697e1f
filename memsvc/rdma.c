// SPDX-License-Identifier: MIT
#include "rdma.h"

#include <errno.h>
#include <fcntl.h>
#include <infiniband/verbs.h>
#include <netdb.h>
#include <poll.h>
#include <rdma/rdma_cma.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "memsvc/proto.h"

#define SQ_DEPTH  (MEMSVC_MAX_BATCH + 2)	   /* a batch and its ordering READ */
#define FENCE_OFF (MEMSVC_MAX_BATCH * MEMSVC_PAGE) /* bounce offset of the ordering READ */

struct memsvc_rdma {
	struct memsvc_client *c;
	struct memsvc_rdma_region reg;
	int timeout_ms;
	struct rdma_event_channel *ch;
	struct rdma_cm_id *id;
	struct ibv_pd *pd;
	struct ibv_comp_channel *cc;
	struct ibv_cq *cq;
	bool has_qp, connected;
	unsigned unacked; /* CQ events not yet acknowledged */
	uint8_t *buf;	  /* MEMSVC_MAX_BATCH pages + 64 bytes, registered as mr */
	struct ibv_mr *mr;
	int dead; /* -errno once the QP cannot be trusted */
	uint64_t next_wr;
	char why[256];
};

__attribute__((format(printf, 3, 4))) static int say(struct memsvc_rdma *r, int err,
						     const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->why, sizeof(r->why), fmt, ap);
	va_end(ap);
	return err;
}

int memsvc_rdma_probe(char *why, size_t whylen)
{
	int n = 0;
	struct ibv_device **l = ibv_get_device_list(&n);
	int e = errno;

	if (l)
		ibv_free_device_list(l);
	/* ENOSYS: the kernel has no RDMA class at all, which is no device too */
	if ((l && n == 0) || (!l && (e == ENOSYS || e == ENODEV || e == ENOENT))) {
		snprintf(why, whylen,
			 "no RDMA device on this machine (ibv_get_device_list found none)");
		return -ENODEV;
	}
	if (!l) {
		snprintf(why, whylen, "no RDMA device on this machine (ibv_get_device_list: %s)",
			 strerror(e));
		return -ENODEV;
	}
	return 0;
}

const char *memsvc_rdma_why(const struct memsvc_rdma *r)
{
	return r->why;
}

const struct memsvc_rdma_region *memsvc_rdma_region(const struct memsvc_rdma *r)
{
	return &r->reg;
}

/* Waits for the next rdma_cm event, which must be want. */
static int cm_wait(struct memsvc_rdma *r, enum rdma_cm_event_type want, const char *what)
{
	struct rdma_cm_event *ev;
	uint64_t deadline = now_ns() + (uint64_t)r->timeout_ms * 1000000;

	for (;;) {
		if (!rdma_get_cm_event(r->ch, &ev))
			break;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return say(r, -errno, "%s: rdma_get_cm_event: %s", what, strerror(errno));
		uint64_t now = now_ns();
		struct pollfd p = {.fd = r->ch->fd, .events = POLLIN};
		if (now >= deadline)
			return say(r, -ETIMEDOUT, "%s: no answer within %d ms", what,
				   r->timeout_ms);
		if (poll(&p, 1, (int)((deadline - now + 999999) / 1000000)) < 0 && errno != EINTR)
			return say(r, -errno, "%s: poll: %s", what, strerror(errno));
	}
	enum rdma_cm_event_type got = ev->event;
	int status = ev->status;
	rdma_ack_cm_event(ev);
	if (got == want)
		return 0;
	if (got == RDMA_CM_EVENT_REJECTED)
		return say(r, -ECONNREFUSED,
			   "%s: the service refused the QP (status %d: the epoch was handed over, "
			   "or no such listener)",
			   what, status);
	return say(r, -ECONNRESET, "%s: %s (status %d)", what, rdma_event_str(got), status);
}

int memsvc_rdma_attach(struct memsvc_client *c, int timeout_ms, struct memsvc_rdma **out, char *why,
		       size_t whylen)
{
	struct memsvc_rdma_region reg;
	int e = memsvc_rdma_probe(why, whylen);

	if (e)
		return e;
	e = memsvc_rdma_info(c, &reg);
	if (e) {
		snprintf(why, whylen, "RDMA_INFO: %s", memsvc_why(c));
		return e;
	}
	return memsvc_rdma_connect(c, &reg, timeout_ms, out, why, whylen);
}

int memsvc_rdma_connect(struct memsvc_client *c, const struct memsvc_rdma_region *reg,
			int timeout_ms, struct memsvc_rdma **out, char *why, size_t whylen)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	struct memsvc_rdma_cm_data priv;
	struct rdma_conn_param cp = {0};
	struct ibv_qp_init_attr qa = {0};
	struct memsvc_rdma *r;
	const char *host;
	char port[8];
	int e;

	e = memsvc_rdma_probe(why, whylen);
	if (e)
		return e;
	r = calloc(1, sizeof(*r));
	if (!r) {
		snprintf(why, whylen, "out of memory");
		return -ENOMEM;
	}
	r->c = c;
	r->timeout_ms = timeout_ms > 0 ? timeout_ms : 10000;
	r->reg = *reg;
	host = r->reg.cm_host[0] ? r->reg.cm_host : memsvc_host(c);
	snprintf(port, sizeof(port), "%u", r->reg.cm_port);
	r->ch = rdma_create_event_channel();
	if (!r->ch) {
		e = say(r, -ENODEV, "no rdma_cm on this machine (%s)", strerror(errno));
		goto fail;
	}
	fcntl(r->ch->fd, F_SETFL, fcntl(r->ch->fd, F_GETFL) | O_NONBLOCK);
	if (rdma_create_id(r->ch, &r->id, r, RDMA_PS_TCP)) {
		e = say(r, -errno, "rdma_create_id: %s", strerror(errno));
		goto fail;
	}
	e = getaddrinfo(host, port, &hints, &res);
	if (e) {
		e = say(r, -EHOSTUNREACH, "RDMA listener %s:%s: %s", host, port, gai_strerror(e));
		goto fail;
	}
	if (rdma_resolve_addr(r->id, NULL, res->ai_addr, r->timeout_ms)) {
		e = say(r, -errno, "RDMA listener %s:%s: %s", host, port, strerror(errno));
		goto fail;
	}
	e = cm_wait(r, RDMA_CM_EVENT_ADDR_RESOLVED, "resolving the RDMA listener's address");
	if (!e && rdma_resolve_route(r->id, r->timeout_ms))
		e = say(r, -errno, "rdma_resolve_route: %s", strerror(errno));
	if (!e)
		e = cm_wait(r, RDMA_CM_EVENT_ROUTE_RESOLVED, "resolving the route");
	if (e)
		goto fail;
	r->pd = ibv_alloc_pd(r->id->verbs);
	r->cc = r->pd ? ibv_create_comp_channel(r->id->verbs) : NULL;
	r->cq = r->cc ? ibv_create_cq(r->id->verbs, SQ_DEPTH * 2, NULL, r->cc, 0) : NULL;
	/* a registered bounce buffer: the caller's pages need no registration */
	r->buf = aligned_alloc(MEMSVC_PAGE, FENCE_OFF + MEMSVC_PAGE);
	if (r->cq && r->buf)
		r->mr = ibv_reg_mr(r->pd, r->buf, FENCE_OFF + MEMSVC_PAGE, IBV_ACCESS_LOCAL_WRITE);
	if (!r->mr) {
		e = say(r, errno ? -errno : -ENOMEM, "RDMA resources on %s: %s",
			ibv_get_device_name(r->id->verbs->device), strerror(errno));
		goto fail;
	}
	qa.send_cq = qa.recv_cq = r->cq;
	qa.qp_type = IBV_QPT_RC;
	qa.sq_sig_all = 0;
	qa.cap.max_send_wr = SQ_DEPTH;
	qa.cap.max_recv_wr = 1;
	qa.cap.max_send_sge = qa.cap.max_recv_sge = 1;
	if (rdma_create_qp(r->id, r->pd, &qa)) {
		e = say(r, -errno, "rdma_create_qp: %s", strerror(errno));
		goto fail;
	}
	r->has_qp = true;
	priv = (struct memsvc_rdma_cm_data){.cookie = r->reg.cookie, .epoch = r->reg.epoch};
	cp.private_data = &priv;
	cp.private_data_len = sizeof(priv);
	cp.initiator_depth = 16; /* READs in flight; the service caps it at its device's */
	cp.responder_resources = 0;
	cp.retry_count = 7;
	cp.rnr_retry_count = 7;
	if (rdma_connect(r->id, &cp)) {
		e = say(r, -errno, "rdma_connect: %s", strerror(errno));
		goto fail;
	}
	e = cm_wait(r, RDMA_CM_EVENT_ESTABLISHED, "connecting the QP");
	if (e)
		goto fail;
	r->connected = true;
	struct ibv_qp_attr qpa;
	struct ibv_qp_init_attr qia;
	/* a QP that cannot have a READ outstanding would stall every batch
	 * (each ends with one): refuse it here, with a reason */
	if (ibv_query_qp(r->id->qp, &qpa, IBV_QP_STATE | IBV_QP_MAX_QP_RD_ATOMIC, &qia) ||
	    qpa.qp_state != IBV_QPS_RTS || qpa.max_rd_atomic == 0) {
		e = say(r, -EIO, "the QP is not usable after the connect (state %d, %u READs)",
			qpa.qp_state, qpa.max_rd_atomic);
		goto fail;
	}
	if (ibv_req_notify_cq(r->cq, 0)) {
		e = say(r, -EIO, "ibv_req_notify_cq failed");
		goto fail;
	}
	freeaddrinfo(res);
	*out = r;
	return 0;
fail:
	if (res)
		freeaddrinfo(res);
	snprintf(why, whylen, "%s", r->why);
	memsvc_rdma_detach(r);
	return e;
}

void memsvc_rdma_detach(struct memsvc_rdma *r)
{
	if (!r)
		return;
	if (r->connected)
		rdma_disconnect(r->id);
	if (r->has_qp)
		rdma_destroy_qp(r->id);
	if (r->mr)
		ibv_dereg_mr(r->mr);
	if (r->cq) {
		if (r->unacked)
			ibv_ack_cq_events(r->cq, r->unacked);
		ibv_destroy_cq(r->cq);
	}
	if (r->cc)
		ibv_destroy_comp_channel(r->cc);
	if (r->pd)
		ibv_dealloc_pd(r->pd);
	if (r->id)
		rdma_destroy_id(r->id);
	if (r->ch)
		rdma_destroy_event_channel(r->ch);
	free(r->buf);
	free(r);
}

static int wc_error(struct memsvc_rdma *r, const struct ibv_wc *wc)
{
	switch (wc->status) {
	case IBV_WC_REM_ACCESS_ERR:
		return say(r, -EACCES,
			   "RDMA remote access error: the service no longer accepts rkey %#x of "
			   "epoch %llu (the namespace was handed over)",
			   r->reg.rkey, (unsigned long long)r->reg.epoch);
	case IBV_WC_RETRY_EXC_ERR:
	case IBV_WC_RNR_RETRY_EXC_ERR:
	case IBV_WC_WR_FLUSH_ERR:
		return say(r, -ECONNRESET, "RDMA: the QP is gone (%s)",
			   ibv_wc_status_str(wc->status));
	default:
		return say(r, -EIO, "RDMA: %s", ibv_wc_status_str(wc->status));
	}
}

/*
 * Waits for the completion of signalled WR last. Only the last WR of a
 * batch is signalled; a failing one completes anyway (with its error),
 * and everything after it is flushed. Any failure or timeout kills the
 * path: a late completion could still land in the bounce buffer.
 */
static int wait_wr(struct memsvc_rdma *r, uint64_t last)
{
	uint64_t deadline = now_ns() + (uint64_t)r->timeout_ms * 1000000;
	int err = 0;

	for (;;) {
		struct ibv_wc wc[8];
		int n = ibv_poll_cq(r->cq, 8, wc);
		if (n < 0)
			return r->dead = say(r, -EIO, "ibv_poll_cq failed");
		for (int i = 0; i < n; i++) {
			if (wc[i].status != IBV_WC_SUCCESS && !err)
				err = wc_error(r, &wc[i]);
			if (wc[i].wr_id == last)
				return err ? (r->dead = err) : 0;
		}
		if (n)
			continue;
		/* nothing yet: sleep on the completion channel */
		uint64_t now = now_ns();
		if (now >= deadline)
			return r->dead = say(r, -ETIMEDOUT, "RDMA: no completion within %d ms",
					     r->timeout_ms);
		struct pollfd p = {.fd = r->cc->fd, .events = POLLIN};
		int pr = poll(&p, 1, (int)MIN((deadline - now + 999999) / 1000000, 100));
		if (pr > 0) {
			struct ibv_cq *cq;
			void *ctx;
			if (!ibv_get_cq_event(r->cc, &cq, &ctx))
				r->unacked++;
			if (r->unacked >= 64) {
				ibv_ack_cq_events(r->cq, r->unacked);
				r->unacked = 0;
			}
			ibv_req_notify_cq(r->cq, 0);
		}
	}
}

static int post(struct memsvc_rdma *r, enum ibv_wr_opcode op, uint64_t laddr, uint64_t raddr,
		uint32_t len, bool signalled, uint64_t *wr_id)
{
	struct ibv_sge sge = {.addr = laddr, .length = len, .lkey = r->mr->lkey};
	struct ibv_send_wr wr = {.wr_id = ++r->next_wr,
				 .sg_list = &sge,
				 .num_sge = 1,
				 .opcode = op,
				 .send_flags = signalled ? IBV_SEND_SIGNALED : 0};
	struct ibv_send_wr *bad;
	int e;

	wr.wr.rdma.remote_addr = raddr;
	wr.wr.rdma.rkey = r->reg.rkey;
	e = ibv_post_send(r->id->qp, &wr, &bad);
	if (e)
		return r->dead = say(r, -e, "ibv_post_send: %s", strerror(e));
	*wr_id = wr.wr_id;
	return 0;
}

static int batch_ok(struct memsvc_rdma *r, const uint64_t *gfn, unsigned n)
{
	uint64_t a;

	if (r->dead)
		return r->dead;
	if (n > MEMSVC_MAX_BATCH)
		return say(r, -E2BIG, "batch of %u pages: at most %u", n, MEMSVC_MAX_BATCH);
	for (unsigned i = 0; i < n; i++)
		if (memsvc_rdma_addr(&r->reg, gfn[i], 1, &a))
			return say(r, -ERANGE, "page %llu is out of range: the namespace has %llu",
				   (unsigned long long)gfn[i], (unsigned long long)r->reg.nr_pages);
	return 0;
}

int memsvc_rdma_read(struct memsvc_rdma *r, const uint64_t *gfn, unsigned n, void *out)
{
	uint64_t raddr, id = 0;
	int e = batch_ok(r, gfn, n);

	if (e || n == 0)
		return e;
	for (unsigned i = 0; i < n && !e; i++) {
		memsvc_rdma_addr(&r->reg, gfn[i], 1, &raddr);
		e = post(r, IBV_WR_RDMA_READ, (uintptr_t)r->buf + (uint64_t)i * MEMSVC_PAGE, raddr,
			 MEMSVC_PAGE, i == n - 1, &id);
	}
	if (!e)
		e = wait_wr(r, id);
	if (!e)
		memcpy(out, r->buf, (size_t)n * MEMSVC_PAGE);
	return e;
}

int memsvc_rdma_put(struct memsvc_rdma *r, const uint64_t *gfn, unsigned n, const void *const *src)
{
	uint64_t raddr, id = 0;
	int e = batch_ok(r, gfn, n);

	if (e || n == 0)
		return e;
	for (unsigned i = 0; i < n && !e; i++) {
		memcpy(r->buf + (size_t)i * MEMSVC_PAGE, src[i], MEMSVC_PAGE);
		memsvc_rdma_addr(&r->reg, gfn[i], 1, &raddr);
		e = post(r, IBV_WR_RDMA_WRITE, (uintptr_t)r->buf + (uint64_t)i * MEMSVC_PAGE, raddr,
			 MEMSVC_PAGE, false, &id);
	}
	/* A WRITE's completion only says the responder took it; a READ
	 * behind it on the same QP completes after the writes before it are
	 * placed in the service's memory, which the commit relies on. */
	if (!e) {
		memsvc_rdma_addr(&r->reg, gfn[n - 1], 1, &raddr);
		e = post(r, IBV_WR_RDMA_READ, (uintptr_t)r->buf + FENCE_OFF, raddr, 8, true, &id);
	}
	if (!e)
		e = wait_wr(r, id);
	return e;
}

int memsvc_rdma_write(struct memsvc_rdma *r, const uint64_t *gfn, unsigned n,
		      const void *const *src)
{
	int e = memsvc_rdma_put(r, gfn, n, src);

	if (!e && n) {
		e = memsvc_rdma_commit(r->c, gfn, n);
		if (e)
			say(r, e, "RDMA_COMMIT: %s", memsvc_why(r->c));
	}
	return e;
}
