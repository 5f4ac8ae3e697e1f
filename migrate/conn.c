// SPDX-License-Identifier: MIT
#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "common/util.h"
#include "transport/transport.h"

int mig_parse_addr(const char *addr, char *host, size_t hostlen, uint16_t *port)
{
	const char *h, *colon;
	uint64_t p;

	if (strncmp(addr, "tcp:", 4))
		return -EINVAL;
	h = addr + 4;
	colon = strrchr(h, ':');
	if (!colon || colon == h || (size_t)(colon - h) >= hostlen)
		return -EINVAL;
	if (parse_uint(colon + 1, 0, 65535, &p))
		return -EINVAL;
	memcpy(host, h, (size_t)(colon - h));
	host[colon - h] = 0;
	/* [::1] style */
	if (host[0] == '[') {
		size_t n = strlen(host);
		if (host[n - 1] != ']')
			return -EINVAL;
		memmove(host, host + 1, n - 2);
		host[n - 2] = 0;
	}
	*port = (uint16_t)p;
	return 0;
}

static int resolve(const char *addr, int passive, struct addrinfo **res)
{
	char host[256], port[8];
	uint16_t p;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = passive ? AI_PASSIVE : 0};

	if (mig_parse_addr(addr, host, sizeof(host), &p))
		return -EINVAL;
	snprintf(port, sizeof(port), "%u", p);
	if (getaddrinfo(host, port, &hints, res))
		return -EHOSTUNREACH;
	return 0;
}

static void tune(int fd)
{
	int one = 1, buf = 4 << 20;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
}

int mig_listen(const char *addr, uint16_t *port_out)
{
	struct addrinfo *res;
	int fd, one = 1, r = resolve(addr, 1, &res);

	if (r)
		return r;
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, MIG_MAX_CHANNELS + 2)) {
		r = -errno;
		close(fd);
		goto out;
	}
	if (port_out) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		getsockname(fd, (struct sockaddr *)&ss, &sl);
		*port_out = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
							   : ((struct sockaddr_in *)&ss)->sin_port);
	}
	r = fd;
out:
	freeaddrinfo(res);
	return r;
}

static int wait_fd(int fd, short ev, int timeout_ms)
{
	struct pollfd p = {.fd = fd, .events = ev};
	int r;

	do {
		r = poll(&p, 1, timeout_ms);
	} while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	return r ? 0 : -ETIMEDOUT;
}

static void conn_init(struct mig_conn *c, int fd)
{
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->capture_fd = -1;
	tune(fd);
}

void mig_conn_init_fd(struct mig_conn *c, int fd)
{
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->capture_fd = -1;
}

int mig_accept(int lfd, int timeout_ms, struct mig_conn *c)
{
	int r = wait_fd(lfd, POLLIN, timeout_ms), fd;

	if (r)
		return r;
	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return -errno;
	conn_init(c, fd);
	return 0;
}

int mig_connect(const char *addr, int timeout_ms, struct mig_conn *c)
{
	struct addrinfo *res, *ai;
	int r = resolve(addr, 0, &res), fd = -1;

	if (r)
		return r;
	r = -ECONNREFUSED;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0)
			continue;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) && errno != EINPROGRESS) {
			r = -errno;
			close(fd);
			fd = -1;
			continue;
		}
		r = wait_fd(fd, POLLOUT, timeout_ms);
		int err = 0;
		socklen_t el = sizeof(err);
		if (!r && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err)
			r = -err;
		if (!r)
			break;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return r;
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	conn_init(c, fd);
	return 0;
}

void mig_conn_close(struct mig_conn *c)
{
	if (c->tx)
		c->tx->ops->close(c->tx);
	if (c->rx)
		c->rx->ops->close(c->rx);
	c->tx = c->rx = NULL;
	if (c->fd >= 0)
		close(c->fd);
	if (c->capture_fd >= 0)
		close(c->capture_fd);
	c->fd = c->capture_fd = -1;
}

int mig_conn_set_timeouts(struct mig_conn *c, int recv_ms, int send_ms)
{
	struct timeval rv = {.tv_sec = recv_ms / 1000, .tv_usec = (recv_ms % 1000) * 1000};
	struct timeval sv = {.tv_sec = send_ms / 1000, .tv_usec = (send_ms % 1000) * 1000};

	if (setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &rv, sizeof(rv)) ||
	    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &sv, sizeof(sv)))
		return -errno;
	if (c->rx)
		c->rx->timeout_ms = recv_ms;
	return 0;
}

int mig_conn_set_timeout(struct mig_conn *c, int timeout_ms)
{
	return mig_conn_set_timeouts(c, timeout_ms, timeout_ms);
}

/* Sends all of iov (modified as it goes). */
static int send_all(struct mig_conn *c, struct iovec *iov, int n)
{
	if (c->capture_fd >= 0 && writev(c->capture_fd, iov, MIN(n, 1024)) < 0)
		c->capture_fd = -1; /* capture is best effort; the migration goes on */
	while (n > 0) {
		struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)MIN(n, 1024)};
		ssize_t w = sendmsg(c->fd, &m, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				snprintf(c->why, sizeof(c->why),
					 "peer not reading past the timeout");
				return -ETIMEDOUT;
			}
			return -errno;
		}
		c->tx_bytes += (uint64_t)w;
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

/* Through the receiving transport if there is one; otherwise read(), so
 * the same code reads a socket or a captured stream. */
static int recv_all(struct mig_conn *c, void *buf, size_t len)
{
	int r;

	if (c->rx) {
		r = c->rx->ops->recv(c->rx, buf, len);
		if (r && c->rx->why[0])
			snprintf(c->why, sizeof(c->why), "%s", c->rx->why);
	} else {
		r = transport_read_full(c->fd, buf, len, false, c->why, sizeof(c->why));
	}
	if (!r)
		c->rx_bytes += len;
	return r;
}

__attribute__((format(printf, 2, 3))) static int proto(struct mig_conn *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->why, sizeof(c->why), fmt, ap);
	va_end(ap);
	return -EPROTO;
}

int mig_send_stream_hdr(struct mig_conn *c)
{
	struct mig_stream_hdr h = {
	    .magic = MIG_MAGIC, .major = MIG_VERSION_MAJOR, .minor = MIG_VERSION_MINOR};
	struct iovec iov = {&h, sizeof(h)};

	return send_all(c, &iov, 1);
}

int mig_recv_stream_hdr(struct mig_conn *c)
{
	struct mig_stream_hdr h;
	int r = recv_all(c, &h, sizeof(h));

	if (r)
		return r;
	if (h.magic != MIG_MAGIC)
		return proto(c, "not a Flit migration stream (bad magic)");
	if (h.major != MIG_VERSION_MAJOR)
		return proto(c, "stream version %u.%u, this Flit speaks %u.x", h.major, h.minor,
			     MIG_VERSION_MAJOR);
	return 0;
}

int mig_conn_attach(struct mig_conn *c, const struct transport_ops *ops, int timeout_ms)
{
	return ops->open(c->fd, timeout_ms, &c->tx);
}

int mig_conn_attach_rx(struct mig_conn *c, const struct transport_ops *ops, int timeout_ms)
{
	return ops->rx_open(c->fd, timeout_ms, &c->rx);
}

static int tx_error(struct mig_conn *c)
{
	if (c->tx->why[0])
		snprintf(c->why, sizeof(c->why), "%s", c->tx->why);
	return c->tx->err ? c->tx->err : -EIO;
}

int mig_conn_flush(struct mig_conn *c)
{
	if (c->tx && c->tx->ops->flush(c->tx))
		return tx_error(c);
	return 0;
}

/* Room for a record with a payload of len in the transport's buffer (not
 * necessarily aligned: records follow each other byte for byte). */
static uint8_t *tx_reserve(struct mig_conn *c, uint64_t len)
{
	if (sizeof(struct mig_rec_hdr) + len > TRANSPORT_MAX_RECORD)
		return NULL;
	return c->tx->ops->reserve(c->tx, sizeof(struct mig_rec_hdr) + len);
}

/* The record at rec goes out: its payload of len bytes is in place after
 * the header, but for its last ext_len bytes, which are sent from ext. The
 * crc covers what the record's flags say (mig_rec_checked_len). */
static int tx_commit(struct mig_conn *c, uint8_t *rec, uint16_t type, uint16_t flags, uint32_t len,
		     const void *ext, size_t ext_len)
{
	struct mig_rec_hdr h = {.type = type, .flags = flags, .len = len, .seq = c->tx_seq++};
	size_t total = sizeof(h) + len, here = total - ext_len;

	h.crc = crc32c(0, rec + sizeof(h), mig_rec_checked_len(&h));
	memcpy(rec, &h, sizeof(h));
	if (c->capture_fd >= 0 &&
	    (write(c->capture_fd, rec, here) != (ssize_t)here ||
	     (ext_len && write(c->capture_fd, ext, ext_len) != (ssize_t)ext_len)))
		c->capture_fd = -1;
	if (c->tx->ops->commit_ext(c->tx, here, ext, ext_len))
		return tx_error(c);
	c->tx_bytes += total;
	return 0;
}

int mig_send_pages(struct mig_conn *c, uint64_t gfn, const void *src, uint32_t count, bool checked)
{
	struct mig_pages ph = {.gfn = gfn, .count = count};
	size_t data = (size_t)count * 4096, len = sizeof(ph) + data;

	if (!c->tx) {
		struct iovec iov[2] = {{&ph, sizeof(ph)}, {(void *)src, data}};
		return mig_send_iov(c, MIG_REC_PAGES, iov, 2);
	}
	uint8_t *rec = tx_reserve(c, checked ? len : sizeof(ph));
	if (!rec)
		return c->tx->err ? tx_error(c) : -EMSGSIZE;
	memcpy(rec + sizeof(struct mig_rec_hdr), &ph, sizeof(ph));
	if (checked) {
		memcpy(rec + sizeof(struct mig_rec_hdr) + sizeof(ph), src, data);
		return tx_commit(c, rec, MIG_REC_PAGES, 0, (uint32_t)len, NULL, 0);
	}
	return tx_commit(c, rec, MIG_REC_PAGES, MIG_F_UNCHECKED, (uint32_t)len, src, data);
}

int mig_send_iov(struct mig_conn *c, uint16_t type, const struct iovec *iov, int n)
{
	return mig_send_iov_flags(c, type, 0, iov, n);
}

int mig_send_iov_flags(struct mig_conn *c, uint16_t type, uint16_t flags, const struct iovec *iov,
		       int n)
{
	struct iovec v[8];
	struct mig_rec_hdr h = {.type = type, .flags = flags, .seq = c->tx_seq};
	uint64_t len = 0;
	uint32_t crc = 0;

	if (n > 7)
		return -EINVAL;
	if (c->tx) {
		for (int i = 0; i < n; i++)
			len += iov[i].iov_len;
		uint8_t *rec = tx_reserve(c, len);
		if (!rec)
			return c->tx->err ? tx_error(c) : -EMSGSIZE;
		uint8_t *p = rec + sizeof(struct mig_rec_hdr);
		for (int i = 0; i < n; i++) {
			memcpy(p, iov[i].iov_base, iov[i].iov_len);
			p += iov[i].iov_len;
		}
		return tx_commit(c, rec, type, flags, (uint32_t)len, NULL, 0);
	}
	for (int i = 0; i < n; i++) {
		len += iov[i].iov_len;
		crc = crc32c(crc, iov[i].iov_base, iov[i].iov_len);
		v[i + 1] = iov[i];
	}
	if (len > MIG_MAX_RECORD)
		return -EMSGSIZE;
	h.len = (uint32_t)len;
	h.crc = crc;
	v[0] = (struct iovec){&h, sizeof(h)};
	c->tx_seq++;
	return send_all(c, v, n + 1);
}

int mig_send_rec(struct mig_conn *c, uint16_t type, const void *payload, uint32_t len)
{
	struct iovec iov = {(void *)payload, len};

	return mig_send_iov(c, type, &iov, len ? 1 : 0);
}

void mig_send_error(struct mig_conn *c, int code, const char *fmt, ...)
{
	struct {
		struct mig_error e;
		char text[200];
	} m = {.e = {.code = code}};
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(m.text, sizeof(m.text), fmt, ap);
	va_end(ap);
	n = MAX(0, MIN(n, (int)sizeof(m.text) - 1));
	if (c->fd >= 0)
		(void)mig_send_rec(c, MIG_REC_ERROR, &m, (uint32_t)(sizeof(m.e) + (size_t)n));
}

const char *mig_rec_name(uint16_t t)
{
	switch (t) {
	case MIG_REC_HELLO:
		return "HELLO";
	case MIG_REC_CHALLENGE:
		return "CHALLENGE";
	case MIG_REC_AUTH:
		return "AUTH";
	case MIG_REC_ACCEPT:
		return "ACCEPT";
	case MIG_REC_PAGES:
		return "PAGES";
	case MIG_REC_ZERO:
		return "ZERO";
	case MIG_REC_END:
		return "END";
	case MIG_REC_ROUND:
		return "ROUND";
	case MIG_REC_HEARTBEAT:
		return "HEARTBEAT";
	case MIG_REC_MARK:
		return "MARK";
	case MIG_REC_ROUND_DONE:
		return "ROUND_DONE";
	case MIG_REC_CPU:
		return "CPU";
	case MIG_REC_VMSTATE:
		return "VMSTATE";
	case MIG_REC_DEVICES:
		return "DEVICES";
	case MIG_REC_COMPLETE:
		return "COMPLETE";
	case MIG_REC_RESUMED:
		return "RESUMED";
	case MIG_REC_GUEST_STALL:
		return "GUEST_STALL";
	case MIG_REC_POSTCOPY:
		return "POSTCOPY";
	case MIG_REC_PAGE_REQ:
		return "PAGE_REQ";
	case MIG_REC_POSTCOPY_DONE:
		return "POSTCOPY_DONE";
	case MIG_REC_DISCARD:
		return "DISCARD";
	case MIG_REC_MEMSVC:
		return "MEMSVC";
	case MIG_REC_RECOVER:
		return "RECOVER";
	case MIG_REC_ADVISE:
		return "ADVISE";
	case MIG_REC_ERROR:
		return "ERROR";
	case MIG_REC_READY:
		return "READY";
	case MIG_REC_GO:
		return "GO";
	default:
		return NULL;
	}
}

static bool known_type(uint16_t t)
{
	return mig_rec_name(t) != NULL;
}

int mig_recv_part(struct mig_conn *c, void *buf, size_t len, uint32_t *crc)
{
	int r = recv_all(c, buf, len);

	if (!r && crc)
		*crc = crc32c(*crc, buf, len);
	return r;
}

int mig_recv_crc_check(struct mig_conn *c, const struct mig_rec_hdr *h, uint32_t crc)
{
	if (crc != h->crc)
		return proto(c, "checksum mismatch in record type %u seq %u", h->type, h->seq);
	return 0;
}

int mig_recv_hdr(struct mig_conn *c, struct mig_rec_hdr *h)
{
	for (;;) {
		int r = recv_all(c, h, sizeof(*h));
		if (r)
			return r;
		if (h->seq != c->rx_seq)
			return proto(c, "record sequence %u where %u was due (lost or reordered)",
				     h->seq, c->rx_seq);
		c->rx_seq++;
		if (h->len > MIG_MAX_RECORD)
			return proto(c, "record of %u bytes is over the %u-byte limit", h->len,
				     MIG_MAX_RECORD);
		if (h->flags & ~MIG_F_KNOWN)
			return proto(c, "record type %u has unknown flags 0x%x", h->type, h->flags);
		if ((h->flags & MIG_F_UNCHECKED) &&
		    (h->type != MIG_REC_PAGES || h->len < sizeof(struct mig_pages)))
			return proto(c, "record type %u of %u bytes cannot be unchecked", h->type,
				     h->len);
		if (known_type(h->type))
			return 0;
		if (!(h->flags & MIG_F_OPTIONAL))
			return proto(c, "unknown record type %u", h->type);
		/* Skip an optional record we do not know, checksum and all. */
		uint8_t buf[4096];
		uint32_t left = h->len, crc = 0;
		while (left) {
			uint32_t n = MIN(left, (uint32_t)sizeof(buf));
			r = mig_recv_part(c, buf, n, &crc);
			if (r)
				return r;
			left -= n;
		}
		r = mig_recv_crc_check(c, h, crc);
		if (r)
			return r;
	}
}

size_t mig_rec_checked_len(const struct mig_rec_hdr *h)
{
	return h->flags & MIG_F_UNCHECKED ? sizeof(struct mig_pages) : h->len;
}

int mig_recv_payload(struct mig_conn *c, const struct mig_rec_hdr *h, void *buf, size_t len)
{
	int r;

	if (len != h->len)
		return proto(c, "record type %u has %u bytes, %zu expected", h->type, h->len, len);
	r = recv_all(c, buf, len);
	return r ? r : mig_recv_crc_check(c, h, crc32c(0, buf, mig_rec_checked_len(h)));
}

int mig_recv_error(struct mig_conn *c, const struct mig_rec_hdr *h, const char *who)
{
	struct {
		struct mig_error e;
		char text[257];
	} m;
	int r;

	if (h->len < sizeof(m.e) || h->len > sizeof(m.e) + 256)
		return proto(c, "ERROR record of %u bytes", h->len);
	memset(&m, 0, sizeof(m));
	r = mig_recv_payload(c, h, &m, h->len);
	if (r)
		return r;
	for (char *p = m.text; *p; p++)
		if (*p < 0x20 || *p > 0x7e)
			*p = '?';
	snprintf(c->why, sizeof(c->why), "%s: %.180s", who, m.text);
	return -ECONNABORTED;
}

int mig_recv_expect(struct mig_conn *c, uint16_t type, void *buf, size_t len)
{
	struct mig_rec_hdr h;
	int r = mig_recv_hdr(c, &h);

	if (r)
		return r;
	if (h.type == MIG_REC_ERROR)
		return mig_recv_error(c, &h, "peer");
	if (h.type != type)
		return proto(c, "record type %u where type %u was due", h.type, type);
	return mig_recv_payload(c, &h, buf, len);
}
