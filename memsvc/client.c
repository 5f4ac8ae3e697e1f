// SPDX-License-Identifier: MIT
#include "client.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <openssl/sha.h>

#include "common/crc32c.h"
#include "common/util.h"
#include "memsvc/proto.h"

#define SMALL_ANSWER 512 /* room for every answer but READ_OK */

struct memsvc_client {
	pthread_mutex_t lock; /* one request at a time; guards all below */
	int fd;		      /* -1: lost, until memsvc_reconnect */
	char host[256];
	uint16_t port;
	int timeout_ms;
	uint32_t next_id;
	bool have_ns; /* opened once: what reconnect reopens */
	char ns[MEMSVC_NAME_MAX + 1];
	uint8_t token[MEMSVC_TOKEN_MAX];
	size_t token_len;
	uint64_t epoch;
	uint64_t nr_pages; /* of the open namespace, from OPEN_OK */
	uint32_t features; /* MEMSVC_FEAT_*, from HELLO_OK */
	char why[256];
	uint8_t small[SMALL_ANSWER];
};

__attribute__((format(printf, 3, 4))) static int fail(struct memsvc_client *c, int err,
						      const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->why, sizeof(c->why), fmt, ap);
	va_end(ap);
	return err;
}

/* The connection is of no further use (lost, timed out or out of step):
 * close it, so every later call fails fast until memsvc_reconnect. */
__attribute__((format(printf, 3, 4))) static int lost(struct memsvc_client *c, int err,
						      const char *fmt, ...)
{
	char what[160];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	return fail(c, err, "memsvc %s:%u: %s", c->host, c->port, what);
}

static int code_errno(uint32_t code)
{
	switch (code) {
	case MEMSVC_E_NOENT:
		return -ENOENT;
	case MEMSVC_E_EXIST:
		return -EEXIST;
	case MEMSVC_E_ACCES:
		return -EACCES;
	case MEMSVC_E_STALE:
		return -ESTALE;
	case MEMSVC_E_NOSPC:
		return -ENOSPC;
	case MEMSVC_E_RANGE:
		return -ERANGE;
	case MEMSVC_E_2BIG:
		return -E2BIG;
	case MEMSVC_E_INVAL:
		return -EINVAL;
	case MEMSVC_E_NOMEM:
		return -ENOMEM;
	case MEMSVC_E_PROTO:
		return -EPROTO;
	case MEMSVC_E_NOTSUP:
		return -EOPNOTSUPP;
	case MEMSVC_E_BUSY:
		return -EBUSY;
	default:
		return -EIO;
	}
}

/* Sends one record: header, then the payload pieces, in one sendmsg when
 * the socket takes it all (it does for every batch on a healthy link). */
static int send_record(struct memsvc_client *c, uint8_t type, uint32_t id, struct iovec *iov,
		       unsigned niov)
{
	struct memsvc_hdr h = {
	    .magic = MEMSVC_MAGIC, .version = MEMSVC_VERSION, .type = type, .id = id};
	size_t total = 0;
	uint32_t crc;

	if (c->fd < 0)
		return fail(c, -ECONNRESET, "not connected to memsvc %s:%u (reconnect first)",
			    c->host, c->port);
	for (unsigned i = 1; i < niov; i++)
		total += iov[i].iov_len;
	h.len = (uint32_t)total;
	crc = memsvc_hdr_crc(&h);
	for (unsigned i = 1; i < niov; i++)
		crc = crc32c(crc, iov[i].iov_base, iov[i].iov_len);
	h.crc = crc;
	iov[0] = (struct iovec){&h, sizeof(h)};
	total += sizeof(h);

	struct msghdr m = {.msg_iov = iov, .msg_iovlen = niov};
	while (total) {
		ssize_t n = sendmsg(c->fd, &m, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return lost(c, -ETIMEDOUT, "sending timed out after %d ms",
					    c->timeout_ms);
			int e = errno == EPIPE	      ? -EPIPE
				: errno == ECONNRESET ? -ECONNRESET
						      : -errno;
			return lost(c, e, "send: %s", strerror(errno));
		}
		total -= (size_t)n;
		/* a short send: skip what went out */
		while (m.msg_iovlen && (size_t)n >= m.msg_iov->iov_len) {
			n -= (ssize_t)m.msg_iov->iov_len;
			m.msg_iov++;
			m.msg_iovlen--;
		}
		if (m.msg_iovlen) {
			m.msg_iov->iov_base = (uint8_t *)m.msg_iov->iov_base + n;
			m.msg_iov->iov_len -= (size_t)n;
		}
	}
	return 0;
}

/* Copies len bytes at offset off of the data spread over iov. */
static void iov_gather(const struct iovec *iov, unsigned niov, size_t off, void *dst, size_t len)
{
	uint8_t *d = dst;

	for (unsigned i = 0; i < niov && len; i++) {
		if (off >= iov[i].iov_len) {
			off -= iov[i].iov_len;
			continue;
		}
		size_t k = MIN(len, iov[i].iov_len - off);
		memcpy(d, (uint8_t *)iov[i].iov_base + off, k);
		d += k;
		len -= k;
		off = 0;
	}
}

/*
 * Receives one answer into iov (iov[0] at least a header; the answer may be
 * shorter than the room). With one request in flight nothing follows the
 * answer, so a receive may ask for all the room at once: a whole READ_OK
 * usually comes in a single recvmsg. With more in flight (exact), the next
 * answer may follow at once: the header is taken alone, then exactly its
 * payload.
 */
static int recv_answer(struct memsvc_client *c, uint32_t id, const struct iovec *iov, unsigned niov,
		       struct memsvc_hdr *h, bool exact)
{
	struct iovec cur[MEMSVC_MAX_BATCH + 4];
	size_t cap = 0, got = 0, want = MEMSVC_HDR_SIZE;
	uint64_t deadline = now_ns() + (uint64_t)c->timeout_ms * 1000000;

	for (unsigned i = 0; i < niov; i++)
		cap += iov[i].iov_len;
	while (got < want) {
		uint64_t now = now_ns();
		struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
		int r =
		    now >= deadline ? 0 : poll(&pfd, 1, (int)((deadline - now + 999999) / 1000000));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return lost(c, -errno, "poll: %s", strerror(errno));
		if (r == 0)
			return lost(c, -ETIMEDOUT, "no answer within %d ms", c->timeout_ms);

		/* the room not filled yet */
		unsigned n = 0;
		size_t skip = got;
		for (unsigned i = 0; i < niov; i++) {
			if (skip >= iov[i].iov_len) {
				skip -= iov[i].iov_len;
				continue;
			}
			cur[n].iov_base = (uint8_t *)iov[i].iov_base + skip;
			cur[n++].iov_len = iov[i].iov_len - skip;
			skip = 0;
		}
		if (exact) { /* no further than this answer's known end */
			size_t left = want - got;
			unsigned k = 0;
			for (; k < n && left; k++) {
				cur[k].iov_len = MIN(cur[k].iov_len, left);
				left -= cur[k].iov_len;
			}
			n = k;
		}
		struct msghdr m = {.msg_iov = cur, .msg_iovlen = n};
		ssize_t k = recvmsg(c->fd, &m, MSG_DONTWAIT);
		if (k == 0)
			return lost(c, -ECONNRESET, "the service closed the connection");
		if (k < 0) {
			if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
				continue;
			int e = errno == ECONNRESET ? -ECONNRESET : -errno;
			return lost(c, e, "receive: %s", strerror(errno));
		}
		got += (size_t)k;
		if (want == MEMSVC_HDR_SIZE && got >= MEMSVC_HDR_SIZE) {
			memcpy(h, iov[0].iov_base, sizeof(*h));
			if (h->magic != MEMSVC_MAGIC || h->version != MEMSVC_VERSION ||
			    !(h->type & MEMSVC_ANSWER))
				return lost(c, -EPROTO, "not a memsvc answer");
			if (h->len > cap - MEMSVC_HDR_SIZE)
				return lost(c, -EPROTO, "answer of %u bytes, at most %zu expected",
					    h->len, cap - MEMSVC_HDR_SIZE);
			want = MEMSVC_HDR_SIZE + h->len;
		}
	}
	if (got > want)
		return lost(c, -EPROTO, "%zu bytes more than the answer", got - want);
	if (h->id != id)
		return lost(c, -EPROTO, "answer to request %u, %u expected", h->id, id);
	return 0;
}

/* The CRC of an answer already received into iov. */
static bool answer_crc_ok(const struct memsvc_hdr *h, const struct iovec *iov, unsigned niov)
{
	uint32_t crc = memsvc_hdr_crc(h);
	size_t off = MEMSVC_HDR_SIZE, left = h->len;

	for (unsigned i = 0; i < niov && left; i++) {
		if (off >= iov[i].iov_len) {
			off -= iov[i].iov_len;
			continue;
		}
		size_t k = MIN(left, iov[i].iov_len - off);
		crc = crc32c(crc, (uint8_t *)iov[i].iov_base + off, k);
		left -= k;
		off = 0;
	}
	return crc == h->crc;
}

/* After recv_answer: checks the CRC, turns ERROR into -errno (with the
 * service's message in why), and the wrong answer type into -EPROTO. */
static int check_answer(struct memsvc_client *c, const struct memsvc_hdr *h, uint8_t type,
			const struct iovec *iov, unsigned niov)
{
	struct memsvc_error e;
	char msg[MEMSVC_MSG_MAX + 1];

	if (!answer_crc_ok(h, iov, niov))
		return lost(c, -EPROTO, "answer %u: CRC mismatch", h->id);
	if (h->type == MEMSVC_ERROR) {
		if (h->len < sizeof(e))
			return lost(c, -EPROTO, "short ERROR answer");
		iov_gather(iov, niov, MEMSVC_HDR_SIZE, &e, sizeof(e));
		if (e.len != h->len - sizeof(e) || e.len > MEMSVC_MSG_MAX)
			return lost(c, -EPROTO, "malformed ERROR answer");
		iov_gather(iov, niov, MEMSVC_HDR_SIZE + sizeof(e), msg, e.len);
		msg[e.len] = 0;
		for (unsigned i = 0; i < e.len; i++)
			if (msg[i] < 0x20 || msg[i] > 0x7e)
				msg[i] = '?';
		int err = code_errno(e.code);
		if (h->flags & MEMSVC_F_CLOSE)
			return lost(c, err, "%s", msg);
		return fail(c, err, "%s", msg);
	}
	if (h->type != type)
		return lost(c, -EPROTO, "answer type %#x, %#x expected", h->type, type);
	return 0;
}

/* A request with a small answer (everything but READ): the answer's
 * payload is copied to out (out_len bytes exactly). */
/* A request whose answer fits the small buffer: its payload (at most
 * out_max bytes, *out_len of them) is copied to out. */
static int call_small_var(struct memsvc_client *c, uint8_t type, struct iovec *iov, unsigned niov,
			  uint8_t answer, void *out, size_t out_max, size_t *out_len)
{
	uint32_t id = ++c->next_id;
	struct iovec in = {c->small, sizeof(c->small)};
	struct memsvc_hdr h;
	int r = send_record(c, type, id, iov, niov);

	if (!r)
		r = recv_answer(c, id, &in, 1, &h, false);
	if (!r)
		r = check_answer(c, &h, answer, &in, 1);
	if (r)
		return r;
	if (h.len > out_max)
		return lost(c, -EPROTO, "answer of %u bytes, at most %zu expected", h.len, out_max);
	if (h.len)
		memcpy(out, c->small + MEMSVC_HDR_SIZE, h.len);
	*out_len = h.len;
	return 0;
}

static int call_small(struct memsvc_client *c, uint8_t type, struct iovec *iov, unsigned niov,
		      uint8_t answer, void *out, size_t out_len)
{
	size_t len;
	int r = call_small_var(c, type, iov, niov, answer, out, out_len, &len);

	if (!r && len != out_len)
		return lost(c, -EPROTO, "answer of %zu bytes, %zu expected", len, out_len);
	return r;
}

static int hello(struct memsvc_client *c)
{
	struct memsvc_hello req = {.min_version = MEMSVC_VERSION, .max_version = MEMSVC_VERSION};
	struct memsvc_hello_ok ok;
	struct iovec iov[2] = {{0}, {&req, sizeof(req)}};
	int r = call_small(c, MEMSVC_HELLO, iov, 2, MEMSVC_HELLO_OK, &ok, sizeof(ok));

	if (r)
		return r;
	if (ok.version != MEMSVC_VERSION || ok.page_size != MEMSVC_PAGE ||
	    ok.max_batch < MEMSVC_MAX_BATCH)
		return lost(c, -EPROTO,
			    "the service speaks version %u, %u-byte pages, %u-page "
			    "batches",
			    ok.version, ok.page_size, ok.max_batch);
	c->features = ok.features;
	return 0;
}

/* A fresh TCP connection and its HELLO. */
static int dial(struct memsvc_client *c)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res, *ai;
	char port[8];
	int r, last = -ECONNREFUSED, one = 1;
	struct timeval tv = {.tv_sec = c->timeout_ms / 1000,
			     .tv_usec = c->timeout_ms % 1000 * 1000};

	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	snprintf(port, sizeof(port), "%u", c->port);
	r = getaddrinfo(c->host, port, &hints, &res);
	if (r)
		return fail(c, -EHOSTUNREACH, "memsvc %s:%u: %s", c->host, c->port,
			    gai_strerror(r));
	for (ai = res; ai && c->fd < 0; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0) {
			last = -errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) && errno != EINPROGRESS) {
			last = -errno;
			close(fd);
			continue;
		}
		struct pollfd pfd = {.fd = fd, .events = POLLOUT};
		int err = 0;
		socklen_t el = sizeof(err);
		int pr;
		do
			pr = poll(&pfd, 1, c->timeout_ms);
		while (pr < 0 && errno == EINTR);
		if (pr == 0)
			err = ETIMEDOUT;
		else if (pr < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el))
			err = errno;
		if (err) {
			last = -err;
			close(fd);
			continue;
		}
		/* blocking from here: sends wait (SO_SNDTIMEO bounds them),
		 * answers are awaited with poll */
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		c->fd = fd;
	}
	freeaddrinfo(res);
	if (c->fd < 0)
		return fail(c, last, "memsvc %s:%u: %s", c->host, c->port, strerror(-last));
	return hello(c);
}

struct memsvc_client *memsvc_connect(const char *host, uint16_t port, int timeout_ms, int *err,
				     char *why, unsigned whylen)
{
	struct memsvc_client *c = calloc(1, sizeof(*c));
	int r;

	if (!c) {
		r = -ENOMEM;
		if (why && whylen)
			snprintf(why, whylen, "out of memory");
		goto out;
	}
	c->fd = -1;
	c->port = port;
	c->timeout_ms = timeout_ms > 0 ? timeout_ms : 10000;
	if (strlen(host) >= sizeof(c->host)) {
		r = -EINVAL;
		if (why && whylen)
			snprintf(why, whylen, "host name too long");
		free(c);
		c = NULL;
		goto out;
	}
	snprintf(c->host, sizeof(c->host), "%s", host);
	pthread_mutex_init(&c->lock, NULL);
	r = dial(c);
	if (r) {
		if (why && whylen)
			snprintf(why, whylen, "%s", c->why);
		memsvc_close(c);
		c = NULL;
	}
out:
	if (err)
		*err = r;
	return c;
}

void memsvc_close(struct memsvc_client *c)
{
	if (!c)
		return;
	if (c->fd >= 0)
		close(c->fd);
	explicit_bzero(c->token, sizeof(c->token));
	pthread_mutex_destroy(&c->lock);
	free(c);
}

const char *memsvc_why(const struct memsvc_client *c)
{
	return c->why;
}

static int ns_request(struct memsvc_client *c, uint8_t type, const char *ns, const char *token,
		      struct memsvc_ns_req *req, uint8_t answer, void *out, size_t out_len)
{
	size_t nl = strlen(ns), tl = strlen(token);

	if (!memsvc_name_valid(ns, nl))
		return fail(c, -EINVAL,
			    "bad namespace name '%.64s': 1 to %u of A-Z a-z 0-9 . _ -, not "
			    "starting with '.'",
			    ns, MEMSVC_NAME_MAX);
	if (tl == 0 || tl > MEMSVC_TOKEN_MAX)
		return fail(c, -EINVAL, "the token must be 1 to %u bytes", MEMSVC_TOKEN_MAX);
	req->name_len = (uint8_t)nl;
	req->token_len = (uint8_t)tl;
	struct iovec iov[4] = {{0}, {req, sizeof(*req)}, {(void *)ns, nl}, {(void *)token, tl}};
	return call_small(c, type, iov, 4, answer, out, out_len);
}

int memsvc_create(struct memsvc_client *c, const char *ns, const char *token, uint64_t nr_pages,
		  uint64_t limit_pages)
{
	struct memsvc_ns_req req = {.nr_pages = nr_pages, .limit_pages = limit_pages};
	int r;

	pthread_mutex_lock(&c->lock);
	r = ns_request(c, MEMSVC_CREATE, ns, token, &req, MEMSVC_CREATE_OK, NULL, 0);
	pthread_mutex_unlock(&c->lock);
	return r;
}

static void info_out(const struct memsvc_info_wire *w, struct memsvc_ns_info *info)
{
	if (info)
		*info = (struct memsvc_ns_info){.nr_pages = w->nr_pages,
						.limit_pages = w->limit_pages,
						.used_pages = w->used_pages,
						.epoch = w->epoch};
}

/* Opens ns with epoch; remembers it for memsvc_reconnect. Lock held. */
static int open_locked(struct memsvc_client *c, const char *ns, const char *token, uint64_t *epoch,
		       struct memsvc_ns_info *info)
{
	struct memsvc_ns_req req = {.epoch = *epoch};
	struct memsvc_info_wire w;
	int r = ns_request(c, MEMSVC_OPEN, ns, token, &req, MEMSVC_OPEN_OK, &w, sizeof(w));

	if (r)
		return r;
	if (w.epoch == 0 || (*epoch && w.epoch != *epoch))
		return lost(c, -EPROTO, "opened with epoch %llu, %llu asked",
			    (unsigned long long)w.epoch, (unsigned long long)*epoch);
	if (ns != c->ns)
		snprintf(c->ns, sizeof(c->ns), "%s", ns);
	if ((const uint8_t *)token != c->token) {
		c->token_len = strlen(token);
		memcpy(c->token, token, c->token_len);
	}
	c->have_ns = true;
	c->epoch = w.epoch;
	c->nr_pages = w.nr_pages;
	*epoch = w.epoch;
	info_out(&w, info);
	return 0;
}

int memsvc_open(struct memsvc_client *c, const char *ns, const char *token, uint64_t *epoch,
		struct memsvc_ns_info *info)
{
	int r;

	pthread_mutex_lock(&c->lock);
	r = open_locked(c, ns, token, epoch, info);
	pthread_mutex_unlock(&c->lock);
	return r;
}

static int admin_ok(struct memsvc_client *c)
{
	if (!(c->features & MEMSVC_FEAT_ADMIN))
		return fail(c, -EOPNOTSUPP,
			    "memsvc %s:%u predates DELETE and LIST (an older flit-memsvc)", c->host,
			    c->port);
	return 0;
}

int memsvc_delete(struct memsvc_client *c, const char *ns, const char *token)
{
	struct memsvc_ns_req req = {0};
	int r;

	pthread_mutex_lock(&c->lock);
	r = admin_ok(c);
	if (!r)
		r = ns_request(c, MEMSVC_DELETE, ns, token, &req, MEMSVC_DELETE_OK, NULL, 0);
	if (!r && c->have_ns && !strcmp(c->ns, ns))
		c->have_ns = false; /* nothing left to reopen */
	pthread_mutex_unlock(&c->lock);
	return r;
}

int memsvc_list(struct memsvc_client *c, const char *token, struct memsvc_ns_entry *out, size_t max,
		size_t *n)
{
	uint8_t
	    ans[sizeof(struct memsvc_list_ok) + MEMSVC_LIST_MAX * sizeof(struct memsvc_list_entry)];
	char after[MEMSVC_NAME_MAX + 1] = "";
	size_t tl = strlen(token), got = 0;
	int r = 0;

	*n = 0;
	if (tl == 0 || tl > MEMSVC_TOKEN_MAX)
		return fail(c, -EINVAL, "the token must be 1 to %u bytes", MEMSVC_TOKEN_MAX);
	pthread_mutex_lock(&c->lock);
	r = admin_ok(c);
	for (bool more = true; !r && more && got < max;) {
		struct memsvc_list_req req = {.after_len = (uint8_t)strlen(after),
					      .token_len = (uint8_t)tl};
		struct iovec iov[4] = {
		    {0}, {&req, sizeof(req)}, {after, req.after_len}, {(void *)token, tl}};
		struct memsvc_list_ok ok;
		size_t len;
		r = call_small_var(c, MEMSVC_LIST, iov, 4, MEMSVC_LIST_OK, ans, sizeof(ans), &len);
		if (r)
			break;
		memcpy(&ok, ans, sizeof(ok));
		if (len < sizeof(ok) || ok.count > MEMSVC_LIST_MAX ||
		    len != sizeof(ok) + ok.count * sizeof(struct memsvc_list_entry) ||
		    (ok.more && !ok.count)) {
			r = lost(c, -EPROTO, "LIST_OK of %zu bytes for %u namespaces", len,
				 ok.count);
			break;
		}
		for (unsigned i = 0; i < ok.count; i++) {
			struct memsvc_list_entry e;
			char name[MEMSVC_NAME_MAX + 1];
			memcpy(&e, ans + sizeof(ok) + i * sizeof(e), sizeof(e));
			if (e.name_len == 0 || e.name_len > MEMSVC_NAME_MAX ||
			    !memsvc_name_valid(e.name, e.name_len)) {
				r = lost(c, -EPROTO, "LIST_OK with a bad name");
				break;
			}
			memcpy(name, e.name, e.name_len);
			name[e.name_len] = 0;
			if (strcmp(name, after) <= 0) {
				r = lost(c, -EPROTO, "LIST_OK out of name order");
				break;
			}
			memcpy(after, name, e.name_len + 1u);
			if (got < max) {
				out[got] = (struct memsvc_ns_entry){.owned = e.owned != 0};
				memcpy(out[got].name, after, e.name_len + 1u);
				info_out(&e.info, &out[got].info);
				got++;
			}
		}
		more = ok.more;
	}
	pthread_mutex_unlock(&c->lock);
	*n = got;
	return r;
}

int memsvc_info(struct memsvc_client *c, struct memsvc_ns_info *info)
{
	struct memsvc_info_wire w;
	struct iovec iov[1] = {{0}};
	int r;

	pthread_mutex_lock(&c->lock);
	r = call_small(c, MEMSVC_INFO, iov, 1, MEMSVC_INFO_OK, &w, sizeof(w));
	pthread_mutex_unlock(&c->lock);
	if (!r)
		info_out(&w, info);
	return r;
}

static int read_send(struct memsvc_client *c, uint32_t id, const uint64_t *gfn, unsigned n)
{
	struct memsvc_batch b = {.n = n};
	struct iovec iov[3] = {{0}, {&b, sizeof(b)}, {(void *)gfn, (size_t)n * 8}};

	return send_record(c, MEMSVC_READ, id, iov, 3);
}

/* Takes the answer to READ request id (n pages) into out and zero. */
static int read_answer(struct memsvc_client *c, uint32_t id, unsigned n, uint8_t *out, bool *zero,
		       bool exact)
{
	struct memsvc_batch b;
	uint32_t fsz = memsvc_flags_size(n), present = 0;
	size_t pre = MEMSVC_HDR_SIZE + sizeof(b) + fsz;
	struct iovec in[2] = {{c->small, pre}, {out, (size_t)n * MEMSVC_PAGE}};
	struct memsvc_hdr h;
	int r;

	_Static_assert(MEMSVC_HDR_SIZE + sizeof(struct memsvc_batch) + MEMSVC_MAX_BATCH <=
			   SMALL_ANSWER,
		       "READ_OK prefix fits");
	r = recv_answer(c, id, in, 2, &h, exact);
	if (!r)
		r = check_answer(c, &h, MEMSVC_READ_OK, in, 2);
	if (r)
		return r;
	const uint8_t *flags = c->small + MEMSVC_HDR_SIZE + sizeof(b);
	memcpy(&b, c->small + MEMSVC_HDR_SIZE, sizeof(b));
	if (h.len < sizeof(b) + fsz || b.n != n)
		return lost(c, -EPROTO, "READ answer for %u pages, %u asked",
			    h.len < sizeof(b) + fsz ? 0 : b.n, n);
	for (unsigned i = 0; i < n; i++) {
		if (flags[i] & ~MEMSVC_PAGE_ZERO)
			return lost(c, -EPROTO, "page flags %#x", flags[i]);
		present += !(flags[i] & MEMSVC_PAGE_ZERO);
	}
	if (h.len != sizeof(b) + fsz + (size_t)present * MEMSVC_PAGE)
		return lost(c, -EPROTO, "READ answer of %u bytes for %u stored pages", h.len,
			    present);
	/* The stored pages came packed at the front of out: move each to its
	 * slot, from the last (a slot is never before its packed place). */
	for (unsigned i = n, j = present; i-- > 0;) {
		uint8_t *slot = out + (size_t)i * MEMSVC_PAGE;
		bool z = flags[i] & MEMSVC_PAGE_ZERO;
		if (z) {
			memset(slot, 0, MEMSVC_PAGE);
		} else if (--j != i) {
			memmove(slot, out + (size_t)j * MEMSVC_PAGE, MEMSVC_PAGE);
		}
		if (zero)
			zero[i] = z;
	}
	return 0;
}

int memsvc_read(struct memsvc_client *c, const uint64_t *gfn, unsigned n, void *out, bool *zero)
{
	int r;

	if (n > MEMSVC_MAX_BATCH)
		return fail(c, -E2BIG, "batch of %u pages: at most %u", n, MEMSVC_MAX_BATCH);
	if (n == 0)
		return 0;
	pthread_mutex_lock(&c->lock);
	uint32_t id = ++c->next_id;
	r = read_send(c, id, gfn, n);
	if (!r)
		r = read_answer(c, id, n, out, zero, false);
	pthread_mutex_unlock(&c->lock);
	return r;
}

static int write_send(struct memsvc_client *c, uint32_t id, const uint64_t *gfn, unsigned n,
		      const void *const *src)
{
	struct memsvc_batch b = {.n = n};
	struct iovec iov[3 + MEMSVC_MAX_BATCH];

	iov[1] = (struct iovec){&b, sizeof(b)};
	iov[2] = (struct iovec){(void *)gfn, (size_t)n * 8};
	for (unsigned i = 0; i < n; i++)
		iov[3 + i] = (struct iovec){(void *)src[i], MEMSVC_PAGE};
	return send_record(c, MEMSVC_WRITE, id, iov, 3 + n);
}

static int write_answer(struct memsvc_client *c, uint32_t id, bool exact)
{
	struct iovec in = {c->small, sizeof(c->small)};
	struct memsvc_hdr h;
	int r = recv_answer(c, id, &in, 1, &h, exact);

	if (!r)
		r = check_answer(c, &h, MEMSVC_WRITE_OK, &in, 1);
	if (!r && h.len)
		r = lost(c, -EPROTO, "WRITE answer of %u bytes, 0 expected", h.len);
	return r;
}

int memsvc_write(struct memsvc_client *c, const uint64_t *gfn, unsigned n, const void *const *src)
{
	int r;

	if (n > MEMSVC_MAX_BATCH)
		return fail(c, -E2BIG, "batch of %u pages: at most %u", n, MEMSVC_MAX_BATCH);
	if (n == 0)
		return 0;
	pthread_mutex_lock(&c->lock);
	uint32_t id = ++c->next_id;
	r = write_send(c, id, gfn, n, src);
	if (!r)
		r = write_answer(c, id, false);
	pthread_mutex_unlock(&c->lock);
	return r;
}

/*
 * Many pages in batches of MEMSVC_MAX_BATCH, up to MEMSVC_PIPELINE of them
 * on the wire: send while the window has room, else take the oldest
 * answer. A refusal stops the sending; the answers still due are taken
 * (the connection stays in step) and the first refusal is returned. A lost
 * connection ends it at once.
 */
static int many(struct memsvc_client *c, bool write, const uint64_t *gfn, size_t n,
		const void *const *src, uint8_t *out, bool *zero)
{
	size_t sent = 0, done = 0;
	uint32_t first = c->next_id + 1;
	char why[sizeof(c->why)];
	int err = 0;

	while (done < sent || (!err && sent < n)) {
		size_t inflight = (sent - done + MEMSVC_MAX_BATCH - 1) / MEMSVC_MAX_BATCH;
		if (!err && sent < n && inflight < MEMSVC_PIPELINE) {
			unsigned k = (unsigned)MIN(n - sent, MEMSVC_MAX_BATCH);
			uint32_t id = ++c->next_id;
			int r = write ? write_send(c, id, gfn + sent, k, src + sent)
				      : read_send(c, id, gfn + sent, k);
			if (r)
				return r; /* lost: no answer comes any more */
			sent += k;
			continue;
		}
		unsigned k = (unsigned)MIN(sent - done, MEMSVC_MAX_BATCH);
		uint32_t id = first + (uint32_t)(done / MEMSVC_MAX_BATCH);
		int r = write ? write_answer(c, id, true)
			      : read_answer(c, id, k, out + done * MEMSVC_PAGE,
					    zero ? zero + done : NULL, true);
		if (r && c->fd < 0)
			return r;
		if (r && !err) { /* keep the first refusal's words */
			err = r;
			memcpy(why, c->why, sizeof(why));
		}
		done += k;
	}
	if (err)
		memcpy(c->why, why, sizeof(why));
	return err;
}

int memsvc_write_many(struct memsvc_client *c, const uint64_t *gfn, size_t n,
		      const void *const *src)
{
	pthread_mutex_lock(&c->lock);
	int r = many(c, true, gfn, n, src, NULL, NULL);
	pthread_mutex_unlock(&c->lock);
	return r;
}

int memsvc_read_many(struct memsvc_client *c, const uint64_t *gfn, size_t n, void *out, bool *zero)
{
	pthread_mutex_lock(&c->lock);
	int r = many(c, false, gfn, n, NULL, out, zero);
	pthread_mutex_unlock(&c->lock);
	return r;
}

bool memsvc_has_rdma(const struct memsvc_client *c)
{
	return c->features & MEMSVC_FEAT_RDMA;
}

const char *memsvc_host(const struct memsvc_client *c)
{
	return c->host;
}

int memsvc_rdma_region_parse(const void *payload, size_t len, uint64_t epoch, uint64_t nr_pages,
			     struct memsvc_rdma_region *out, char *why, unsigned whylen)
{
	struct memsvc_rdma_info_wire w;

#define BAD(err, ...)                                       \
	do {                                                \
		if (why && whylen)                          \
			snprintf(why, whylen, __VA_ARGS__); \
		return err;                                 \
	} while (0)

	if (len != sizeof(w))
		BAD(-EPROTO, "RDMA region of %zu bytes, %zu expected", len, sizeof(w));
	memcpy(&w, payload, sizeof(w));
	if (w.epoch != epoch)
		BAD(-ESTALE, "RDMA region for epoch %llu, this client holds %llu",
		    (unsigned long long)w.epoch, (unsigned long long)epoch);
	/* nr_pages is at most 2^28, so this product cannot wrap */
	if (nr_pages == 0 || nr_pages > MEMSVC_MAX_NS_PAGES || w.length != nr_pages * MEMSVC_PAGE)
		BAD(-EPROTO, "RDMA region of %llu bytes for a namespace of %llu pages",
		    (unsigned long long)w.length, (unsigned long long)nr_pages);
	if (w.addr > UINT64_MAX - w.length)
		BAD(-EPROTO, "RDMA region %#llx + %llu wraps around", (unsigned long long)w.addr,
		    (unsigned long long)w.length);
	if (w.cm_port == 0 || w.reserved || w.cm_host_len > MEMSVC_CM_HOST_MAX)
		BAD(-EPROTO, "RDMA listener port %u, host of %u bytes", w.cm_port, w.cm_host_len);
	for (unsigned i = 0; i < sizeof(w.cm_host); i++) {
		char ch = w.cm_host[i];
		bool ok = i >= w.cm_host_len
			      ? ch == 0
			      : (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
				    (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' ||
				    ch == ':' || ch == '_';
		if (!ok)
			BAD(-EPROTO, "RDMA listener host with byte %#x at %u", (uint8_t)ch, i);
	}
	*out = (struct memsvc_rdma_region){.epoch = w.epoch,
					   .addr = w.addr,
					   .nr_pages = nr_pages,
					   .cookie = w.cookie,
					   .rkey = w.rkey,
					   .cm_port = w.cm_port};
	memcpy(out->cm_host, w.cm_host, w.cm_host_len);
	out->cm_host[w.cm_host_len] = 0;
	return 0;
#undef BAD
}

int memsvc_rdma_addr(const struct memsvc_rdma_region *r, uint64_t gfn, uint64_t n, uint64_t *addr)
{
	if (n == 0 || gfn >= r->nr_pages || n > r->nr_pages - gfn)
		return -ERANGE;
	*addr = r->addr + gfn * MEMSVC_PAGE;
	return 0;
}

int memsvc_rdma_info(struct memsvc_client *c, struct memsvc_rdma_region *out)
{
	uint8_t w[sizeof(struct memsvc_rdma_info_wire)];
	struct iovec iov[1] = {{0}};
	char why[200];
	int r;

	pthread_mutex_lock(&c->lock);
	r = call_small(c, MEMSVC_RDMA_INFO, iov, 1, MEMSVC_RDMA_INFO_OK, w, sizeof(w));
	if (!r) {
		r = memsvc_rdma_region_parse(w, sizeof(w), c->epoch, c->nr_pages, out, why,
					     sizeof(why));
		/* the service answered for the wrong namespace or epoch:
		 * nothing it says on this connection can be trusted */
		if (r)
			r = lost(c, -EPROTO, "%s", why);
	}
	pthread_mutex_unlock(&c->lock);
	return r;
}

int memsvc_rdma_commit(struct memsvc_client *c, const uint64_t *gfn, unsigned n)
{
	struct memsvc_batch b = {.n = n};
	struct iovec iov[3] = {{0}, {&b, sizeof(b)}, {(void *)gfn, (size_t)n * 8}};
	int r;

	if (n > MEMSVC_MAX_BATCH)
		return fail(c, -E2BIG, "batch of %u pages: at most %u", n, MEMSVC_MAX_BATCH);
	if (n == 0)
		return 0;
	pthread_mutex_lock(&c->lock);
	r = call_small(c, MEMSVC_RDMA_COMMIT, iov, 3, MEMSVC_RDMA_COMMIT_OK, NULL, 0);
	pthread_mutex_unlock(&c->lock);
	return r;
}

/* A fresh connection, and the namespace held opened again with *epoch
 * (0: as its new owner; NULL: the epoch held). */
static int reopen(struct memsvc_client *c, uint64_t *epoch)
{
	char token[MEMSVC_TOKEN_MAX + 1];
	uint64_t held;
	int r;

	pthread_mutex_lock(&c->lock);
	r = dial(c);
	if (!r && c->have_ns) {
		memcpy(token, c->token, c->token_len);
		token[c->token_len] = 0;
		held = c->epoch;
		r = open_locked(c, c->ns, token, epoch ? epoch : &held, NULL);
		explicit_bzero(token, sizeof(token));
	}
	pthread_mutex_unlock(&c->lock);
	return r;
}

int memsvc_reconnect(struct memsvc_client *c)
{
	return reopen(c, NULL);
}

int memsvc_retake(struct memsvc_client *c, uint64_t *epoch)
{
	if (!c->have_ns)
		return fail(c, -EINVAL, "no namespace was opened on this connection");
	return reopen(c, epoch);
}

static void hex_text(const uint8_t *b, size_t len, char *out)
{
	static const char hex[] = "0123456789abcdef";

	for (size_t i = 0; i < len; i++) {
		out[2 * i] = hex[b[i] >> 4];
		out[2 * i + 1] = hex[b[i] & 15];
	}
	out[2 * len] = 0;
}

void memsvc_token_text(const uint8_t *secret, size_t len, char *out)
{
	uint8_t d[SHA256_DIGEST_LENGTH];

	if (2 * len <= MEMSVC_TOKEN_MAX) {
		hex_text(secret, len, out);
		return;
	}
	/* Its hex would not fit a memsvc token: the hex of its SHA-256. */
	SHA256(secret, len, d);
	memcpy(out, "sha256:", 7);
	hex_text(d, sizeof(d), out + 7);
}

int memsvc_parse_url(const char *url, char *host, unsigned hostlen, uint16_t *port, char *ns,
		     unsigned nslen, char *why, unsigned whylen)
{
	static const char scheme[] = "memsvc://";
	const char *h, *hend, *slash, *p;
	uint64_t pv = MEMSVC_DEFAULT_PORT;
	char pbuf[8];

#define BAD(...)                                            \
	do {                                                \
		if (why && whylen)                          \
			snprintf(why, whylen, __VA_ARGS__); \
		return -EINVAL;                             \
	} while (0)

	if (strncmp(url, scheme, sizeof(scheme) - 1))
		BAD("%s: a memsvc URL is memsvc://HOST[:PORT]/NAMESPACE", url);
	h = url + sizeof(scheme) - 1;
	slash = strchr(h, '/');
	if (!slash)
		BAD("%s: no /NAMESPACE after the host", url);
	if (h[0] == '[') {
		hend = memchr(h, ']', (size_t)(slash - h));
		if (!hend)
			BAD("%s: no ']' after the IPv6 address", url);
		p = hend + 1;
		h++;
	} else {
		hend = memchr(h, ':', (size_t)(slash - h));
		if (!hend)
			hend = slash;
		p = hend;
	}
	if (hend == h)
		BAD("%s: no host", url);
	if ((size_t)(hend - h) >= hostlen)
		BAD("%s: host name too long", url);
	if (p != slash) {
		if (*p != ':' || slash - p - 1 <= 0 || (size_t)(slash - p - 1) >= sizeof(pbuf))
			BAD("%s: a port is :1 to :65535", url);
		memcpy(pbuf, p + 1, (size_t)(slash - p - 1));
		pbuf[slash - p - 1] = 0;
		if (parse_uint(pbuf, 1, 65535, &pv))
			BAD("%s: a port is :1 to :65535", url);
	}
	if (!memsvc_name_valid(slash + 1, strlen(slash + 1)))
		BAD("%s: bad namespace name: 1 to %u of A-Z a-z 0-9 . _ -, not starting with '.'",
		    url, MEMSVC_NAME_MAX);
	if (strlen(slash + 1) >= nslen)
		BAD("%s: namespace name too long", url);
	memcpy(host, h, (size_t)(hend - h));
	host[hend - h] = 0;
	*port = (uint16_t)pv;
	strcpy(ns, slash + 1);
	return 0;
#undef BAD
}
