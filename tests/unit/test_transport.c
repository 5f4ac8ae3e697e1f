// SPDX-License-Identifier: MIT
/*
 * The data-channel transports over a real loopback TCP connection: every
 * record arrives whole and in order (records of 5 bytes to the largest, some
 * ending with bytes sent from outside the transport, many times the io_uring
 * transport's slots, flushes anywhere), and a peer that
 * closes or stops reading makes the sender fail with a reason, never hang.
 * Each case runs for plain sends, io_uring as it chooses, and io_uring
 * forced to zero-copy sends.
 *
 * Receiving, for plain reads and io_uring: records written in pieces of 1
 * byte to 100 KB with pauses arrive whole into the place given; a peer
 * that closes mid-record, a silent peer (with a timeout set at open and
 * one changed later), and a socket shut down under a blocked receive each
 * end the receive with its error and a reason, never a hang.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
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

static const struct transport_ops *const rx_kinds[] = {&transport_sync, &transport_uring};

static struct transport *open_rx(const struct transport_ops *ops, int fd, int timeout_ms)
{
	struct transport *t = NULL;
	int r = ops->rx_open(fd, timeout_ms, &t);

	TEST_ASSERT(r == 0, "%s: rx_open: %s", ops->name, strerror(-r));
	TEST_ASSERT(t->rx, "%s: not a receiving transport", ops->name);
	return t;
}

struct writer {
	int fd;
	uint32_t records;
	uint64_t bytes;
};

/* Records as in reader_main, written in pieces of odd sizes, sometimes
 * after a pause, so the receiver sees short reads everywhere. */
static void *writer_main(void *arg)
{
	struct writer *w = arg;
	static uint8_t buf[TRANSPORT_MAX_RECORD];
	uint32_t seed = 7;

	for (uint32_t i = 0; i < w->records; i++) {
		uint32_t len = rec_len(i);
		memcpy(buf, &len, 4);
		for (uint32_t o = 4; o < len; o++)
			buf[o] = pat(i, o);
		for (uint32_t off = 0; off < len;) {
			seed = seed * 1103515245 + 12345;
			uint32_t piece = 1 + (seed >> 8) % (seed & 1 ? 7 : 100000);
			piece = piece < len - off ? piece : len - off;
			ssize_t r = write(w->fd, buf + off, piece);
			if (r <= 0)
				return NULL;
			off += (uint32_t)r;
			w->bytes += (uint64_t)r;
			if (seed % 97 == 0)
				usleep(2000);
		}
	}
	return NULL;
}

static void received_whole_into_place(void)
{
	for (unsigned k = 0; k < 2; k++) {
		int fd[2];
		tcp_pair(fd);
		struct writer w = {.fd = fd[0], .records = 120};
		struct transport *t = open_rx(rx_kinds[k], fd[1], 10000);
		pthread_t th;
		static uint8_t buf[TRANSPORT_MAX_RECORD];
		uint64_t got = 0;
		pthread_create(&th, NULL, writer_main, &w);
		for (uint32_t i = 0; i < w.records; i++) {
			uint32_t len = 0;
			TEST_ASSERT_EQ(t->ops->recv(t, &len, 4), 0);
			TEST_ASSERT(len == rec_len(i), "%s: record %u: length %u, %u expected",
				    rx_kinds[k]->name, i, len, rec_len(i));
			memset(buf, 0xee, len);
			TEST_ASSERT_EQ(t->ops->recv(t, buf, len - 4), 0);
			for (uint32_t o = 4; o < len; o++)
				TEST_ASSERT(buf[o - 4] == pat(i, o), "%s: record %u: byte %u wrong",
					    rx_kinds[k]->name, i, o);
			TEST_ASSERT(buf[len - 4] == 0xee || len == TRANSPORT_MAX_RECORD,
				    "%s: record %u: wrote past its end", rx_kinds[k]->name, i);
			got += len;
		}
		pthread_join(th, NULL);
		TEST_ASSERT_EQ(got, w.bytes);
		printf("  %s: %u records, %.1f MiB, whole and in place\n", rx_kinds[k]->name,
		       w.records, (double)got / (1 << 20));
		t->ops->close(t);
		close(fd[0]);
		close(fd[1]);
	}
}

static void rx_peer_closes_mid_record(void)
{
	for (unsigned k = 0; k < 2; k++) {
		int fd[2];
		uint8_t buf[100];
		tcp_pair(fd);
		struct transport *t = open_rx(rx_kinds[k], fd[1], 10000);
		TEST_ASSERT_EQ(write(fd[0], "0123456789", 10), 10);
		close(fd[0]);
		int r = t->ops->recv(t, buf, sizeof(buf));
		TEST_ASSERT(r == -ECONNRESET, "%s: %d (%s)", rx_kinds[k]->name, r, strerror(-r));
		TEST_ASSERT(strstr(t->why, "closed"), "%s: why: %s", rx_kinds[k]->name, t->why);
		TEST_ASSERT(!memcmp(buf, "0123456789", 10), "%s: the bytes that came",
			    rx_kinds[k]->name);
		t->ops->close(t);
		close(fd[1]);
	}
}

static void rx_silence_times_out(void)
{
	for (unsigned k = 0; k < 2; k++) {
		int fd[2];
		uint8_t buf[16];
		tcp_pair(fd);
		struct transport *t = open_rx(rx_kinds[k], fd[1], 300);
		for (int pass = 0; pass < 2; pass++) {
			uint64_t t0 = now_ns();
			int r = t->ops->recv(t, buf, sizeof(buf));
			uint64_t ms = (now_ns() - t0) / 1000000;
			TEST_ASSERT(r == -ETIMEDOUT, "%s: %d (%s)", rx_kinds[k]->name, r,
				    strerror(-r));
			TEST_ASSERT(strstr(t->why, "silent"), "%s: why: %s", rx_kinds[k]->name,
				    t->why);
			TEST_ASSERT(ms >= 250 && ms < 20000, "%s: timed out after %llu ms",
				    rx_kinds[k]->name, (unsigned long long)ms);
			printf("  %s: timed out after %llu ms\n", rx_kinds[k]->name,
			       (unsigned long long)ms);
			/* The timeout can change: as migrate/conn.c does it. */
			struct timeval tv = {.tv_usec = 600000};
			TEST_ASSERT_EQ(setsockopt(fd[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)),
				       0);
			t->timeout_ms = 600;
			if (pass == 1)
				TEST_ASSERT(ms >= 550, "%s: the new timeout: %llu ms",
					    rx_kinds[k]->name, (unsigned long long)ms);
		}
		t->ops->close(t);
		close(fd[0]);
		close(fd[1]);
	}
}

struct blocked {
	struct transport *t;
	int r;
};

static void *blocked_main(void *arg)
{
	struct blocked *b = arg;
	uint8_t buf[4096];

	b->r = b->t->ops->recv(b->t, buf, sizeof(buf));
	return NULL;
}

/* A receiver thread blocked with no timeout: shutting the socket down (how
 * a destination stops its receivers) ends the receive. */
static void rx_shutdown_wakes_a_blocked_receive(void)
{
	for (unsigned k = 0; k < 2; k++) {
		int fd[2];
		tcp_pair(fd);
		struct blocked b = {.t = open_rx(rx_kinds[k], fd[1], 0), .r = 1};
		pthread_t th;
		pthread_create(&th, NULL, blocked_main, &b);
		usleep(200000);
		TEST_ASSERT(__atomic_load_n(&b.r, __ATOMIC_ACQUIRE) == 1, "%s: returned early",
			    rx_kinds[k]->name);
		uint64_t t0 = now_ns();
		shutdown(fd[1], SHUT_RDWR);
		pthread_join(th, NULL);
		TEST_ASSERT(b.r == -ECONNRESET, "%s: %d (%s)", rx_kinds[k]->name, b.r,
			    strerror(-b.r));
		printf("  %s: woke %.2f ms after the shutdown\n", rx_kinds[k]->name,
		       (double)(now_ns() - t0) / 1e6);
		b.t->ops->close(b.t);
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
	    TEST_CASE(records_arrive_whole_and_in_order),
	    TEST_CASE(peer_closes),
	    TEST_CASE(peer_stops_reading_times_out),
	    TEST_CASE(oversized_record_refused),
	    TEST_CASE(transport_names_resolve),
	    TEST_CASE(received_whole_into_place),
	    TEST_CASE(rx_peer_closes_mid_record),
	    TEST_CASE(rx_silence_times_out),
	    TEST_CASE(rx_shutdown_wakes_a_blocked_receive),
	};
	return test_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]));
}
