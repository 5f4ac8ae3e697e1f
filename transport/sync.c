// SPDX-License-Identifier: MIT
/*
 * The plain transport: each commit is one blocking send() of the record,
 * from a staging buffer of one record. The reference the io_uring
 * transport is measured against, and the fallback where io_uring is off.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>

#include "transport.h"

struct sync_tx {
	struct transport t;
	uint8_t buf[TRANSPORT_MAX_RECORD];
};

static int sync_open(int fd, int timeout_ms, struct transport **out)
{
	struct sync_tx *s = calloc(1, sizeof(*s));
	struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};

	if (!s)
		return -ENOMEM;
	if (timeout_ms > 0 && setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv))) {
		free(s);
		return -errno;
	}
	s->t = (struct transport){.ops = &transport_sync, .fd = fd, .timeout_ms = timeout_ms};
	snprintf(s->t.mode, sizeof(s->t.mode), "send");
	*out = &s->t;
	return 0;
}

static void *sync_reserve(struct transport *t, size_t len)
{
	return t->err || len > TRANSPORT_MAX_RECORD ? NULL : ((struct sync_tx *)t)->buf;
}

static int sync_commit_ext(struct transport *t, size_t len, const void *ext, size_t ext_len)
{
	struct iovec iov[2] = {{((struct sync_tx *)t)->buf, len}, {(void *)ext, ext_len}};
	struct msghdr m = {.msg_iov = iov, .msg_iovlen = ext_len ? 2 : 1};

	if (t->err)
		return t->err;
	len += ext_len;
	while (len) {
		ssize_t w = sendmsg(t->fd, &m, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			t->err = -errno;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				snprintf(t->why, sizeof(t->why),
					 "peer not reading past the timeout");
				t->err = -ETIMEDOUT;
			}
			return t->err;
		}
		len -= (size_t)w;
		while (m.msg_iovlen && (size_t)w >= m.msg_iov->iov_len) {
			w -= (ssize_t)m.msg_iov->iov_len;
			m.msg_iov++;
			m.msg_iovlen--;
		}
		if (m.msg_iovlen) {
			m.msg_iov->iov_base = (uint8_t *)m.msg_iov->iov_base + w;
			m.msg_iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

static int sync_commit(struct transport *t, size_t len)
{
	return sync_commit_ext(t, len, NULL, 0);
}

static int sync_flush(struct transport *t)
{
	return t->err;
}

static void sync_close(struct transport *t)
{
	free(t);
}

static int sync_rx_open(int fd, int timeout_ms, struct transport **out)
{
	struct transport *t = calloc(1, sizeof(*t));
	struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};

	if (!t)
		return -ENOMEM;
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv))) {
		free(t);
		return -errno;
	}
	*t = (struct transport){
	    .ops = &transport_sync, .fd = fd, .timeout_ms = timeout_ms, .rx = true};
	snprintf(t->mode, sizeof(t->mode), "read");
	*out = t;
	return 0;
}

/* The socket's SO_RCVTIMEO is the timeout: migrate/conn.c keeps it. */
static int sync_recv(struct transport *t, void *buf, size_t len)
{
	return transport_read_full(t->fd, buf, len, true, t->why, sizeof(t->why));
}

const struct transport_ops transport_sync = {
    .name = "sync",
    .open = sync_open,
    .reserve = sync_reserve,
    .commit = sync_commit,
    .commit_ext = sync_commit_ext,
    .flush = sync_flush,
    .close = sync_close,
    .rx_open = sync_rx_open,
    .recv = sync_recv,
};
