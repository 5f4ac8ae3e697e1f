// SPDX-License-Identifier: MIT
/*
 * The io_uring transport. Records are built in SLOTS slots of SLOT_BYTES,
 * registered with the ring as fixed buffers; a record may also end with
 * bytes sent from where they lie (guest RAM, commit_ext), so a slot is a
 * list of iovecs into itself and elsewhere. A full slot is sealed and sent
 * while the sender fills the next one, so building the next batch overlaps
 * the kernel (and the peer) taking the last one. One send is in flight per
 * socket at a time (a second could overtake a short first), slots go in
 * seal order, and a short send is continued from where it stopped.
 *
 * Zero copy (IORING_OP_SEND_ZC from the registered slot) is a measured
 * choice: the first sends ask the kernel to report whether it really
 * avoided the copy (IORING_SEND_ZC_REPORT_USAGE). Where it did, zero copy
 * stays. Where it copied anyway (loopback, or a device without
 * scatter-gather), that alone does not say which send is cheaper (on one
 * host plain sends were twice as fast, in the nested lab zero-copy sends
 * that copied were 1.7 times as fast), so the transport times both: the
 * next ZC_TIME_BYTES with zero-copy sends, as many with plain ones, each
 * by the time its sends were in flight (not the gaps between rounds), and
 * keeps zero copy only if it was clearly faster. Before 6.2 (no report):
 * plain sends. FLIT_TRANSPORT_ZC=0 or 1 forces the choice.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include "common/loop.h"
#include "common/util.h"
#include "transport.h"

#ifndef IORING_SEND_ZC_REPORT_USAGE
#define IORING_SEND_ZC_REPORT_USAGE (1U << 3) /* kernel 6.2 */
#endif
#ifndef IORING_NOTIF_USAGE_ZC_COPIED
#define IORING_NOTIF_USAGE_ZC_COPIED (1U << 31)
#endif

#define SLOTS	      4
#define SLOT_BYTES    (1u << 20) /* record bytes built in a slot */
#define SLOT_SEND     (1u << 20) /* bytes a slot sends, guest RAM included */
#define SLOT_IOVS     64
#define ZC_PROBES     4		  /* notifications looked at before the choice is final */
#define ZC_TIME_BYTES (16u << 20) /* bytes timed with each kind of send */

struct uring_tx;

struct slot {
	struct loop_op op; /* first: the CQE callback finds the slot */
	struct uring_tx *u;
	unsigned idx;
	uint8_t *buf;
	size_t used;  /* bytes of records built in buf */
	size_t total; /* bytes to send: buf's and external ones */
	size_t off;   /* bytes the kernel has taken */
	struct iovec iov[SLOT_IOVS];
	unsigned niov, first; /* first: iovec the next send starts at */
	struct msghdr msg;
	bool sealed; /* full: waits to be sent, or being sent */
};

/* ZC_TIME: zero copy copies here; timing each kind of send (timing_zc:
 * the zero-copy half) before the choice. */
enum zc_mode { ZC_OFF, ZC_PROBE, ZC_ON, ZC_TIME };

struct uring_tx {
	struct transport t;
	struct loop loop;
	struct slot slot[SLOTS];
	uint8_t *mem;
	bool fixed;	   /* slots registered as fixed buffers */
	unsigned cur;	   /* slot being filled */
	unsigned head;	   /* oldest sealed slot not yet fully sent */
	bool sending;	   /* a send of slot[head] is in flight */
	enum zc_mode zc;   /* how the next send goes */
	unsigned probes;   /* zero-copy notifications seen */
	unsigned copied;   /* ... of which the kernel copied anyway */
	uint64_t progress; /* bytes the kernel took, for the timeout */
	/* ZC_TIME: this half's bytes and time in flight; the first half's
	 * rate (bytes per ns) */
	bool timing_zc;
	uint64_t sent_at, time_bytes, time_ns;
	double zc_rate;
};

static bool slot_free(const struct slot *s)
{
	return !s->sealed && !s->op.inflight && !s->total;
}

static void set_err(struct uring_tx *u, int err, const char *why)
{
	if (u->t.err)
		return;
	u->t.err = err;
	if (why)
		snprintf(u->t.why, sizeof(u->t.why), "%s", why);
}

/* Starts the send of slot[head] if none is in flight. */
static void pump(struct uring_tx *u)
{
	struct slot *s = &u->slot[u->head];

	if (u->sending || u->t.err || !s->sealed)
		return;
	struct io_uring_sqe *sqe = loop_sqe(&u->loop, &s->op);
	if (!sqe) {
		set_err(u, -EIO, "io_uring submission queue broken");
		return;
	}
	const unsigned flags = MSG_WAITALL | MSG_NOSIGNAL;
	unsigned zflags = u->zc == ZC_PROBE ? IORING_SEND_ZC_REPORT_USAGE : 0;
	bool zc = u->zc == ZC_ON || u->zc == ZC_PROBE || (u->zc == ZC_TIME && u->timing_zc);
	struct iovec *v = &s->iov[s->first];
	if (s->niov - s->first == 1 && u->fixed && v->iov_base >= (void *)s->buf &&
	    (uint8_t *)v->iov_base < s->buf + SLOT_BYTES) {
		/* One piece, in the registered slot. */
		if (zc)
			io_uring_prep_send_zc_fixed(sqe, u->t.fd, v->iov_base, v->iov_len, flags,
						    zflags, s->idx);
		else
			io_uring_prep_send(sqe, u->t.fd, v->iov_base, v->iov_len, flags);
	} else {
		s->msg = (struct msghdr){.msg_iov = v, .msg_iovlen = s->niov - s->first};
		if (zc) {
			io_uring_prep_sendmsg_zc(sqe, u->t.fd, &s->msg, flags);
			sqe->ioprio |= (uint16_t)zflags;
		} else {
			io_uring_prep_sendmsg(sqe, u->t.fd, &s->msg, flags);
		}
	}
	u->sending = true;
	u->sent_at = now_ns();
}

static void zc_notified(struct uring_tx *u, const struct io_uring_cqe *cqe)
{
	if (u->zc != ZC_PROBE)
		return;
	u->probes++;
	if ((uint32_t)cqe->res & IORING_NOTIF_USAGE_ZC_COPIED)
		u->copied++;
	if (u->copied) {
		u->zc = ZC_TIME;
		u->timing_zc = true;
		u->time_bytes = u->time_ns = 0;
		snprintf(u->t.mode, sizeof(u->t.mode), "send-zc (copied; timing)");
	} else if (u->probes >= ZC_PROBES) {
		u->zc = ZC_ON;
		snprintf(u->t.mode, sizeof(u->t.mode), "send-zc");
	}
}

/* ZC_TIME: a send of n bytes is done; after each half, the next step. */
static void time_send(struct uring_tx *u, uint64_t n)
{
	u->time_bytes += n;
	u->time_ns += now_ns() - u->sent_at;
	if (u->time_bytes < ZC_TIME_BYTES || !u->time_ns)
		return;
	double rate = (double)u->time_bytes / (double)u->time_ns;
	u->time_bytes = u->time_ns = 0;
	if (u->timing_zc) {
		u->zc_rate = rate;
		u->timing_zc = false;
		snprintf(u->t.mode, sizeof(u->t.mode), "send (zero-copy copied; timing)");
		return;
	}
	/* Zero copy that copies only if clearly faster: it holds the slot
	 * until its notification, and its cost varies more. */
	bool zc = u->zc_rate > 1.15 * rate;
	u->zc = zc ? ZC_ON : ZC_OFF;
	snprintf(u->t.mode, sizeof(u->t.mode), "%s",
		 zc ? "send-zc (copied; timed faster)" : "send (zero-copy copied)");
}

static void on_cqe(struct loop *l, struct loop_op *op, const struct io_uring_cqe *cqe)
{
	struct slot *s = (struct slot *)op;
	struct uring_tx *u = s->u;

	(void)l;
	if (cqe->flags & IORING_CQE_F_NOTIF) {
		zc_notified(u, cqe);
		goto done;
	}
	u->sending = false;
	if (cqe->res == -EINVAL && u->zc == ZC_PROBE && s->off == 0 && u->probes == 0) {
		/* This kernel has no zero-copy usage report: plain sends. */
		u->zc = ZC_OFF;
		snprintf(u->t.mode, sizeof(u->t.mode), "send (no zero-copy report)");
		goto done;
	}
	if (cqe->res < 0) {
		char why[96];
		snprintf(why, sizeof(why), "send: %s", strerror(-cqe->res));
		set_err(u, cqe->res, why);
		goto done;
	}
	if (cqe->res == 0) {
		set_err(u, -ECONNRESET, "send: the peer took nothing");
		goto done;
	}
	s->off += (size_t)cqe->res;
	u->progress += (uint64_t)cqe->res;
	if (u->zc == ZC_TIME)
		time_send(u, (uint64_t)cqe->res);
	if (s->off == s->total) {
		/* All taken: the slot is free once its notification is in. */
		s->sealed = false;
		s->used = s->off = s->total = 0;
		s->niov = s->first = 0;
		u->head = (u->head + 1) % SLOTS;
	} else {
		/* A short send: the next one starts where this one stopped. */
		size_t n = (size_t)cqe->res;
		while (n && n >= s->iov[s->first].iov_len)
			n -= s->iov[s->first++].iov_len;
		s->iov[s->first].iov_base = (uint8_t *)s->iov[s->first].iov_base + n;
		s->iov[s->first].iov_len -= n;
	}
done:
	pump(u);
}

/* Runs the ring until cond holds; fails after timeout_ms without progress. */
static int wait_for(struct uring_tx *u, bool (*cond)(struct uring_tx *u))
{
	uint64_t last = u->progress, since = now_ns();
	int64_t limit = u->t.timeout_ms > 0 ? (int64_t)u->t.timeout_ms * 1000000 : -1;

	while (!u->t.err && !cond(u)) {
		int r = loop_run_once(&u->loop, limit < 0 ? -1 : limit / 4 + 1);
		if (r < 0) {
			set_err(u, r, "io_uring wait failed");
			break;
		}
		if (u->progress != last) {
			last = u->progress;
			since = now_ns();
		} else if (limit >= 0 && now_ns() - since > (uint64_t)limit) {
			set_err(u, -ETIMEDOUT, "peer not reading past the timeout");
		}
	}
	return u->t.err;
}

static bool cur_free(struct uring_tx *u)
{
	return slot_free(&u->slot[u->cur]);
}

static bool all_sent(struct uring_tx *u)
{
	return !u->sending && !u->slot[u->head].sealed;
}

/* The current slot joins the send queue and the next one becomes current.
 * The kernel gets it at once, and what has completed is taken without
 * waiting: the kernel sends while the caller fills the next slot. */
static int advance(struct uring_tx *u)
{
	u->slot[u->cur].sealed = true;
	pump(u);
	int r = loop_run_once(&u->loop, 0);
	if (r < 0)
		set_err(u, r, "io_uring submit failed");
	u->cur = (u->cur + 1) % SLOTS;
	return u->t.err;
}

static void *uring_reserve(struct transport *t, size_t len)
{
	struct uring_tx *u = (struct uring_tx *)t;
	struct slot *s = &u->slot[u->cur];

	if (t->err || len > TRANSPORT_MAX_RECORD)
		return NULL;
	if (s->used + len > SLOT_BYTES || s->niov + 2 > SLOT_IOVS || s->total >= SLOT_SEND) {
		if (advance(u))
			return NULL;
		s = &u->slot[u->cur];
	}
	/* A slot is written only when no send and no zero-copy
	 * notification of it is outstanding: a slot just come round again
	 * may still be queued or on its way out. */
	if ((s->sealed || !s->total) && wait_for(u, cur_free))
		return NULL;
	return s->buf + s->used;
}

static void add_iov(struct slot *s, const void *p, size_t len)
{
	struct iovec *last = s->niov ? &s->iov[s->niov - 1] : NULL;

	if (last && (const uint8_t *)last->iov_base + last->iov_len == p)
		last->iov_len += len; /* records built one after the other */
	else
		s->iov[s->niov++] = (struct iovec){(void *)p, len};
	s->total += len;
}

static int uring_commit_ext(struct transport *t, size_t len, const void *ext, size_t ext_len)
{
	struct uring_tx *u = (struct uring_tx *)t;
	struct slot *s = &u->slot[u->cur];

	if (t->err)
		return t->err;
	add_iov(s, s->buf + s->used, len);
	s->used += len;
	if (ext_len)
		add_iov(s, ext, ext_len);
	return 0;
}

static int uring_commit(struct transport *t, size_t len)
{
	return uring_commit_ext(t, len, NULL, 0);
}

static int uring_flush(struct transport *t)
{
	struct uring_tx *u = (struct uring_tx *)t;

	if (!t->err && u->slot[u->cur].total)
		advance(u);
	return t->err ? t->err : wait_for(u, all_sent);
}

/* Receiving: one IORING_OP_RECV with MSG_WAITALL straight into the
 * caller's buffer, linked to a timeout, on a ring of its own. A receive
 * the timeout cancels after some bytes came completes with their count,
 * and the rest is asked for again: the timeout is for silence, as
 * SO_RCVTIMEO is for plain reads. */
struct uring_rx {
	struct transport t;
	struct io_uring ring;
};

static void uring_close(struct transport *t)
{
	struct uring_tx *u = (struct uring_tx *)t;

	if (!u)
		return;
	if (t->rx) {
		io_uring_queue_exit(&((struct uring_rx *)t)->ring);
		free(t);
		return;
	}
	if (u->loop.ring.ring_fd > 0) {
		/* No send may still read the slots when they are unmapped.
		 * Zero-copy notifications need not be waited for: those pages
		 * stay pinned by the kernel until it lets them go, and a peer
		 * that stopped reading would hold them forever. */
		for (unsigned i = 0; i < SLOTS; i++)
			if (u->slot[i].op.inflight)
				loop_cancel(&u->loop, &u->slot[i].op);
		if (!u->t.err)
			set_err(u, -ECANCELED, "closed");
		u->t.timeout_ms = 2000;
		uint64_t end = now_ns() + 2000000000ULL;
		while (u->sending && now_ns() < end)
			if (loop_run_once(&u->loop, 100000000) < 0)
				break;
		loop_fini(&u->loop);
	}
	if (u->mem)
		munmap(u->mem, (size_t)SLOTS * SLOT_BYTES);
	free(u);
}

static int uring_open(int fd, int timeout_ms, struct transport **out)
{
	struct uring_tx *u = calloc(1, sizeof(*u));
	struct iovec iov[SLOTS];
	int r;

	if (!u)
		return -ENOMEM;
	u->t = (struct transport){.ops = &transport_uring, .fd = fd, .timeout_ms = timeout_ms};
	r = loop_init(&u->loop, 64);
	if (r) {
		u->loop.ring.ring_fd = -1;
		uring_close(&u->t);
		return r;
	}
	u->mem = mmap(NULL, (size_t)SLOTS * SLOT_BYTES, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (u->mem == MAP_FAILED) {
		r = -errno;
		u->mem = NULL;
		uring_close(&u->t);
		return r;
	}
	for (unsigned i = 0; i < SLOTS; i++) {
		u->slot[i] = (struct slot){
		    .op.cb = on_cqe, .u = u, .idx = i, .buf = u->mem + (size_t)i * SLOT_BYTES};
		iov[i] = (struct iovec){u->slot[i].buf, SLOT_BYTES};
	}
	/* Fixed buffers spare the kernel pinning pages on every zero-copy
	 * send; where locked memory is short, the sends still work without. */
	u->fixed = io_uring_register_buffers(&u->loop.ring, iov, SLOTS) == 0;

	const char *zc = getenv("FLIT_TRANSPORT_ZC");
	u->zc = zc && !strcmp(zc, "0") ? ZC_OFF : zc && !strcmp(zc, "1") ? ZC_ON : ZC_PROBE;
	snprintf(u->t.mode, sizeof(u->t.mode), "%s",
		 u->zc == ZC_OFF  ? "send"
		 : u->zc == ZC_ON ? "send-zc"
				  : "send-zc (probing)");
	*out = &u->t;
	return 0;
}

static int uring_rx_open(int fd, int timeout_ms, struct transport **out)
{
	struct uring_rx *u = calloc(1, sizeof(*u));
	int r;

	if (!u)
		return -ENOMEM;
	r = io_uring_queue_init(4, &u->ring, 0);
	if (r) {
		free(u);
		return r;
	}
	u->t = (struct transport){
	    .ops = &transport_uring, .fd = fd, .timeout_ms = timeout_ms, .rx = true};
	snprintf(u->t.mode, sizeof(u->t.mode), "recv");
	*out = &u->t;
	return 0;
}

static int uring_recv(struct transport *t, void *buf, size_t len)
{
	struct uring_rx *u = (struct uring_rx *)t;
	uint8_t *p = buf;

	while (len) {
		struct __kernel_timespec ts = {.tv_sec = t->timeout_ms / 1000,
					       .tv_nsec = (t->timeout_ms % 1000) * 1000000LL};
		struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
		unsigned want = 1;
		io_uring_prep_recv(sqe, t->fd, p, len, MSG_WAITALL);
		sqe->user_data = 1;
		if (t->timeout_ms > 0) {
			sqe->flags |= IOSQE_IO_LINK;
			sqe = io_uring_get_sqe(&u->ring);
			io_uring_prep_link_timeout(sqe, &ts, 0);
			sqe->user_data = 2;
			want = 2;
		}
		int r, res = 0;
		/* One system call submits and waits. It fails with -EINTR
		 * only if a signal came before anything was submitted (the
		 * kernel reports the submission otherwise): then again. */
		do
			r = io_uring_submit_and_wait(&u->ring, want);
		while (r == -EINTR);
		if (r < 0) {
			snprintf(t->why, sizeof(t->why), "io_uring: %s", strerror(-r));
			return r;
		}
		/* Both CQEs come: the receive's, and its timeout's (fired,
		 * or cancelled by the receive's completion). */
		for (unsigned seen = 0; seen < want;) {
			struct io_uring_cqe *cqe;
			r = io_uring_wait_cqe(&u->ring, &cqe);
			if (r == -EINTR)
				continue;
			if (r < 0) {
				snprintf(t->why, sizeof(t->why), "io_uring: %s", strerror(-r));
				return r;
			}
			if (cqe->user_data == 1)
				res = cqe->res;
			io_uring_cqe_seen(&u->ring, cqe);
			seen++;
		}
		if (res == -ECANCELED || res == -ETIME) {
			snprintf(t->why, sizeof(t->why), "peer silent past the timeout");
			return -ETIMEDOUT;
		}
		if (res == -EINTR || res == -EAGAIN)
			continue;
		if (res < 0) {
			snprintf(t->why, sizeof(t->why), "receiving: %s", strerror(-res));
			return res;
		}
		if (res == 0) {
			snprintf(t->why, sizeof(t->why), "peer closed the connection");
			return -ECONNRESET;
		}
		p += res;
		len -= (size_t)res;
	}
	return 0;
}

const struct transport_ops transport_uring = {
    .name = "uring",
    .open = uring_open,
    .reserve = uring_reserve,
    .commit = uring_commit,
    .commit_ext = uring_commit_ext,
    .flush = uring_flush,
    .close = uring_close,
    .rx_open = uring_rx_open,
    .recv = uring_recv,
};
