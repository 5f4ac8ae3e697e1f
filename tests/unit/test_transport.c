// SPDX-License-Identifier: MIT
/*
 * The data-channel transports over a real loopback TCP connection: every
 * record arrives whole and in order (records of 5 bytes to the largest, some
 * ending with bytes sent from outside the transport, many times the io_uring
 * transport's slots, flushes anywhere), and a peer that
 * closes or stops reading makes the sender fail with a reason, never hang.
 * Each case runs for plain sends, io_uring as it chooses, and io_uring
 * forced to zero-copy sends.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"
#include "tests/lib/test.h"
#include "transport/transport.h"

struct variant {
	const char *name;
	const struct transport_ops *ops;
	const char *zc;
};

static const struct variant variants[] = {
    {"sync", &transport_sync, NULL},
    {"uring", &transport_uring, NULL},
    {"uring-zc", &transport_uring, "1"},
};

/* A connected loopback TCP pair: fd[0] sends, fd[1] receives. */
static void tcp_pair(int fd[2])
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	TEST_ASSERT(l >= 0, "socket");
	TEST_ASSERT_EQ(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
	TEST_ASSERT_EQ(listen(l, 1), 0);
	TEST_ASSERT_EQ(getsockname(l, (struct sockaddr *)&a, &al), 0);
	fd[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	TEST_ASSERT_EQ(connect(fd[0], (struct sockaddr *)&a, sizeof(a)), 0);
	fd[1] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	TEST_ASSERT(fd[1] >= 0, "accept");
	close(l);
}

static struct transport *open_tx(const struct variant *v, int fd, int timeout_ms)
{
	struct transport *t = NULL;

	if (v->zc)
		setenv("FLIT_TRANSPORT_ZC", v->zc, 1);
	else
		unsetenv("FLIT_TRANSPORT_ZC");
	int r = v->ops->open(fd, timeout_ms, &t);
	TEST_ASSERT(r == 0, "%s: open: %s", v->name, strerror(-r));
	return t;
}

/* Record i: a 4-byte length, then bytes of a pattern of (i, offset). */
static uint8_t pat(uint32_t i, uint32_t off)
{
	return (uint8_t)(i * 131 + off * 7 + (off >> 9));
}

static uint32_t rec_len(uint32_t i)
{
	static const uint32_t sizes[] = {5, 4096 + 4, 70000, TRANSPORT_MAX_RECORD, 1000, 262164};
	return sizes[i % 6];
}

struct reader {
	int fd;
	uint32_t expect; /* records */
	uint32_t got;
	uint64_t bytes;
	char err[160];
};

static int read_full(int fd, uint8_t *p, size_t n)
{
	while (n) {
		ssize_t r = read(fd, p, n);
		if (r <= 0)
			return r == 0 ? 0 : -1;
		p += r;
		n -= (size_t)r;
	}
	return 1;
}

static void *reader_main(void *arg)
{
	struct reader *rd = arg;
	static uint8_t buf[TRANSPORT_MAX_RECORD];

	for (;;) {
		uint32_t len;
		int r = read_full(rd->fd, (uint8_t *)&len, 4);
		if (r <= 0)
			break;
		if (len < 4 || len > TRANSPORT_MAX_RECORD) {
			snprintf(rd->err, sizeof(rd->err), "record %u: length %u", rd->got, len);
			break;
		}
		if (read_full(rd->fd, buf, len - 4) <= 0) {
			snprintf(rd->err, sizeof(rd->err), "record %u cut short", rd->got);
			break;
		}
		if (len != rec_len(rd->got)) {
			snprintf(rd->err, sizeof(rd->err), "record %u: length %u, %u expected",
				 rd->got, len, rec_len(rd->got));
			break;
		}
		for (uint32_t o = 4; o < len; o++)
			if (buf[o - 4] != pat(rd->got, o)) {
				snprintf(rd->err, sizeof(rd->err), "record %u: byte %u wrong",
					 rd->got, o);
				return NULL;
			}
		rd->got++;
		rd->bytes += len;
	}
	return NULL;
}

static void send_record(struct transport *t, uint32_t i)
{
	uint32_t len = rec_len(i);
	uint8_t *p = t->ops->reserve(t, len);

	TEST_ASSERT(p, "reserve of %u failed: %s", len, t->why);
	memcpy(p, &len, 4);
	for (uint32_t o = 4; o < len; o++)
		p[o] = pat(i, o);
	TEST_ASSERT_EQ(t->ops->commit(t, len), 0);
}

/* Record i with all but its first 8 bytes sent from where they lie
 * (commit_ext, as guest pages are), at arena: it must stay until flush. */
static void send_record_ext(struct transport *t, uint32_t i, uint8_t *arena)
{
	uint32_t len = rec_len(i);
	uint8_t *p = t->ops->reserve(t, 8);

	TEST_ASSERT(p, "reserve failed: %s", t->why);
	memcpy(p, &len, 4);
	for (uint32_t o = 4; o < 8 && o < len; o++)
		p[o] = pat(i, o);
	for (uint32_t o = 8; o < len; o++)
		arena[o - 8] = pat(i, o);
	TEST_ASSERT_EQ(t->ops->commit_ext(t, len < 8 ? len : 8, arena, len < 8 ? 0 : len - 8), 0);
}

static void records_arrive_whole_and_in_order(void)
{
	for (unsigned v = 0; v < 3; v++) {
		int fd[2];
		tcp_pair(fd);
		struct reader rd = {.fd = fd[1], .expect = 300};
		pthread_t th;
		struct transport *t = open_tx(&variants[v], fd[0], 10000);
		pthread_create(&th, NULL, reader_main, &rd);
		uint64_t sent = 0, at = 0;
		/* Every third record ends with bytes from outside the
		 * transport, each in its own place (a zero-copy send may
		 * still read them after a flush). */
		static uint8_t arena[64 << 20];
		for (uint32_t i = 0; i < rd.expect; i++) {
			if (i % 3 == 1 && at + rec_len(i) <= sizeof(arena)) {
				send_record_ext(t, i, arena + at);
				at += rec_len(i);
			} else {
				send_record(t, i);
			}
			sent += rec_len(i);
			if (i % 37 == 0)
				TEST_ASSERT_EQ(t->ops->flush(t), 0);
		}
		TEST_ASSERT_EQ(t->ops->flush(t), 0);
		t->ops->close(t);
		shutdown(fd[0], SHUT_WR);
		pthread_join(th, NULL);
		TEST_ASSERT(!rd.err[0], "%s: %s", variants[v].name, rd.err);
		TEST_ASSERT_EQ(rd.got, rd.expect);
		TEST_ASSERT_EQ(rd.bytes, sent);
		printf("  %s: %u records, %.1f MiB, all in order\n", variants[v].name, rd.got,
		       (double)sent / (1 << 20));
		close(fd[0]);
		close(fd[1]);
	}
}

/* Sends until the transport reports an error; at most limit bytes. */
static int send_until_error(struct transport *t, uint64_t limit)
{
	uint64_t sent = 0;

	for (uint32_t i = 0; sent < limit; i++) {
		uint32_t len = rec_len(i);
		uint8_t *p = t->ops->reserve(t, len);
		if (!p)
			return t->err;
		memset(p, 0, len);
		memcpy(p, &len, 4);
		if (t->ops->commit(t, len))
			return t->err;
		sent += len;
	}
	return t->ops->flush(t);
}

static void peer_closes(void)
{
	for (unsigned v = 0; v < 3; v++) {
		int fd[2];
		tcp_pair(fd);
		struct transport *t = open_tx(&variants[v], fd[0], 10000);
		close(fd[1]);
		int r = send_until_error(t, 1ull << 30);
		TEST_ASSERT(r == -EPIPE || r == -ECONNRESET, "%s: %d (%s)", variants[v].name, r,
			    strerror(-r));
		TEST_ASSERT(t->why[0] || r == -EPIPE || r == -ECONNRESET, "no reason");
		/* The error sticks. */
		TEST_ASSERT(t->ops->reserve(t, 16) == NULL, "reserve after an error");
		TEST_ASSERT_EQ(t->ops->flush(t), r);
		printf("  %s: %s\n", variants[v].name, strerror(-r));
		t->ops->close(t);
		close(fd[0]);
	}
}

static void peer_stops_reading_times_out(void)
{
	for (unsigned v = 0; v < 3; v++) {
		int fd[2];
		tcp_pair(fd);
		struct transport *t = open_tx(&variants[v], fd[0], 300);
		uint64_t t0 = now_ns();
		int r = send_until_error(t, 1ull << 30);
		TEST_ASSERT(r == -ETIMEDOUT, "%s: %d (%s)", variants[v].name, r, strerror(-r));
		TEST_ASSERT(strstr(t->why, "not reading"), "%s: why: %s", variants[v].name, t->why);
		TEST_ASSERT(now_ns() - t0 < 30000000000ull, "took %llu ms",
			    (unsigned long long)((now_ns() - t0) / 1000000));
		printf("  %s: %s\n", variants[v].name, t->why);
		t->ops->close(t);
		close(fd[0]);
		close(fd[1]);
	}
}

static void oversized_record_refused(void)
{
	for (unsigned v = 0; v < 3; v++) {
		int fd[2];
		tcp_pair(fd);
		struct transport *t = open_tx(&variants[v], fd[0], 1000);
		TEST_ASSERT(t->ops->reserve(t, TRANSPORT_MAX_RECORD + 1) == NULL, "%s",
			    variants[v].name);
		TEST_ASSERT_EQ(t->err, 0);
		TEST_ASSERT(t->ops->reserve(t, TRANSPORT_MAX_RECORD) != NULL, "%s",
			    variants[v].name);
		t->ops->close(t);
		close(fd[0]);
		close(fd[1]);
	}
}

static void transport_names_resolve(void)
{
	TEST_ASSERT(transport_find("uring") == &transport_uring, "uring");
	TEST_ASSERT(transport_find("sync") == &transport_sync, "sync");
	TEST_ASSERT(transport_find("rdma") == NULL, "rdma is not built yet");
	TEST_ASSERT(transport_find("") == NULL, "empty");
}

int main(int argc, char **argv)
{
	static const struct test_case cases[] = {
	    TEST_CASE(records_arrive_whole_and_in_order), TEST_CASE(peer_closes),
	    TEST_CASE(peer_stops_reading_times_out),	  TEST_CASE(oversized_record_refused),
	    TEST_CASE(transport_names_resolve),
	};
	return test_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]));
}
