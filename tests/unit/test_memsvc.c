// SPDX-License-Identifier: MIT
/*
 * flit-memsvc, the real binary, on a loopback port, driven by the client
 * library and by raw sockets: data comes back as written (and never-written
 * pages as zero), bad input is refused with its error while other clients
 * go on, a stale owner is fenced, limits hold, acknowledged pages survive a
 * kill -9 with --dir; namespaces are listed (by token, in name order,
 * across several answers) and deleted (wrong token, unknown name and a
 * namespace a live owner holds are refused; a deleted one is gone for its
 * holders, for a restart with --dir and from --max-mem's account; the
 * command line does both). The last case measures a 1-page read against a raw
 * TCP ping-pong of the same sizes (printed, never asserted).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "memsvc/client.h"
#include "memsvc/proto.h"
#include "tests/lib/memsvc_peer.h"
#include "tests/lib/proc.h"
#include "tests/lib/test.h"

#define TOKEN "token-0123456789abcdef"

/* ---- the service ---- */

/* SIGTERM: it must exit 0, and a sanitizer build must have nothing to
 * report into its log. */
static void svc_stop(struct memsvc_peer *s)
{
	static char buf[65536];

	memsvc_peer_stop(s, buf, sizeof(buf));
	TEST_ASSERT(!strstr(buf, "runtime error") && !strstr(buf, "Sanitizer"), "log:\n%s", buf);
}

/* Writes pages [from, to) of pattern (ns, v) in batches of batch. */
static int write_range(struct memsvc_client *c, unsigned ns, uint64_t from, uint64_t to, unsigned v,
		       unsigned batch)
{
	static __thread uint8_t buf[MEMSVC_MAX_BATCH][MEMSVC_PAGE];
	uint64_t gfn[MEMSVC_MAX_BATCH];
	const void *src[MEMSVC_MAX_BATCH];

	for (uint64_t g = from; g < to;) {
		unsigned n = (unsigned)MIN((uint64_t)batch, to - g);
		for (unsigned i = 0; i < n; i++) {
			gfn[i] = g + i;
			page_fill(buf[i], ns, g + i, v);
			src[i] = buf[i];
		}
		int r = memsvc_write(c, gfn, n, src);
		if (r)
			return r;
		g += n;
	}
	return 0;
}

/* ---- raw protocol ---- */

/* The service has closed the connection: EOF (or a reset) within 5 s. */
static bool raw_closed(int fd)
{
	char b[256];
	ssize_t n;

	while ((n = recv(fd, b, sizeof(b), 0)) > 0)
		;
	return n == 0 || errno == ECONNRESET;
}

/* A fresh client can still do a whole round: the service survived. */
static void still_serving(const struct memsvc_peer *s, const char *ns)
{
	struct memsvc_client *c = memsvc_peer_connect(s->port);
	uint64_t epoch = 0, gfn = 3;
	uint8_t page[MEMSVC_PAGE];
	const void *src = page;
	bool z;

	TEST_ASSERT_EQ(memsvc_open(c, ns, TOKEN, &epoch, NULL), 0);
	page_fill(page, 99, gfn, epoch);
	TEST_ASSERT_EQ(memsvc_write(c, &gfn, 1, &src), 0);
	memset(page, 0, sizeof(page));
	TEST_ASSERT_EQ(memsvc_read(c, &gfn, 1, page, &z), 0);
	TEST_ASSERT(!z && page_check(page, 99, gfn, (unsigned)epoch), "page read back differs");
	memsvc_close(c);
}

/* ---- cases ---- */

#define NS_PAGES 600

struct worker {
	const struct memsvc_peer *s;
	unsigned id;
	struct memsvc_client *shared; /* a connection two threads share */
	char err[256];
	uint64_t pages_checked;
};

/* Owner of namespace w<id>: writes every page but each 7th (batches of 1 to
 * 64 pages, twice, the second version over the first), then reads it all
 * back in batches of other sizes. */
static void *worker_main(void *arg)
{
	struct worker *w = arg;
	char name[32], why[256] = "";
	int err = 0;
	struct memsvc_client *c = memsvc_connect("127.0.0.1", w->s->port, 5000, &err, why, 256);
	uint64_t epoch = 0, gfn[MEMSVC_MAX_BATCH];
	static __thread uint8_t out[MEMSVC_MAX_BATCH][MEMSVC_PAGE];
	bool zero[MEMSVC_MAX_BATCH];
	int r;

#define WFAIL(...)                                             \
	do {                                                   \
		snprintf(w->err, sizeof(w->err), __VA_ARGS__); \
		goto out;                                      \
	} while (0)

	if (!c)
		WFAIL("connect: %s", why);
	snprintf(name, sizeof(name), "w%u", w->id);
	if ((r = memsvc_create(c, name, TOKEN, NS_PAGES, 0)))
		WFAIL("create %s: %s", name, memsvc_why(c));
	if ((r = memsvc_open(c, name, TOKEN, &epoch, NULL)))
		WFAIL("open %s: %s", name, memsvc_why(c));
	for (unsigned v = 1; v <= 2; v++) {
		for (uint64_t g = 0; g < NS_PAGES;) {
			unsigned n = 1 + (unsigned)((g * 7 + w->id + v) % MEMSVC_MAX_BATCH);
			uint64_t end = MIN(g + n, (uint64_t)NS_PAGES);
			for (uint64_t x = g; x < end; x++) {
				if (x % 7 == 0)
					continue;
				if ((r = write_range(c, w->id, x, x + 1, v, 1)))
					WFAIL("write %llu: %s", (unsigned long long)x,
					      memsvc_why(c));
			}
			g = end;
		}
	}
	for (uint64_t g = 0; g < NS_PAGES;) {
		unsigned n =
		    (unsigned)MIN((uint64_t)(5 + w->id * 9) % MEMSVC_MAX_BATCH + 1, NS_PAGES - g);
		for (unsigned i = 0; i < n; i++)
			gfn[i] = g + i;
		if ((r = memsvc_read(c, gfn, n, out, zero)))
			WFAIL("read %llu+%u: %s", (unsigned long long)g, n, memsvc_why(c));
		for (unsigned i = 0; i < n; i++) {
			bool hole = gfn[i] % 7 == 0;
			if (zero[i] != hole)
				WFAIL("page %llu: zero flag %d", (unsigned long long)gfn[i],
				      zero[i]);
			if (hole ? !page_all_zero(out[i]) : !page_check(out[i], w->id, gfn[i], 2))
				WFAIL("page %llu of %s: wrong data", (unsigned long long)gfn[i],
				      name);
			w->pages_checked++;
		}
		g += n;
		/* and a page of the namespace every thread reads through the
		 * one shared connection */
		uint64_t sg = (g + w->id) % 64;
		static __thread uint8_t sp[MEMSVC_PAGE];
		bool sz;
		if ((r = memsvc_read(w->shared, &sg, 1, sp, &sz)))
			WFAIL("shared read: %s", memsvc_why(w->shared));
		if (sz || !page_check(sp, 100, sg, 1))
			WFAIL("shared page %llu: wrong data", (unsigned long long)sg);
	}
	struct memsvc_ns_info info;
	if ((r = memsvc_info(c, &info)))
		WFAIL("info: %s", memsvc_why(c));
	if (info.used_pages != NS_PAGES - (NS_PAGES + 6) / 7 || info.nr_pages != NS_PAGES ||
	    info.limit_pages != NS_PAGES || info.epoch != epoch)
		WFAIL("info: used %llu nr %llu limit %llu epoch %llu",
		      (unsigned long long)info.used_pages, (unsigned long long)info.nr_pages,
		      (unsigned long long)info.limit_pages, (unsigned long long)info.epoch);
out:
	memsvc_close(c);
	return NULL;
#undef WFAIL
}

static void many_clients(void)
{
	enum { N = 8 };
	struct memsvc_peer s;
	struct worker w[N];
	pthread_t t[N];
	uint64_t total = 0;

	memsvc_peer_start(&s, "many", 0, NULL);
	/* One connection shared by every thread (its mutex serialises
	 * them), owner of namespace "shared". */
	struct memsvc_client *shared = memsvc_peer_connect(s.port);
	uint64_t epoch = 0;
	TEST_ASSERT_EQ(memsvc_create(shared, "shared", TOKEN, 64, 0), 0);
	TEST_ASSERT_EQ(memsvc_open(shared, "shared", TOKEN, &epoch, NULL), 0);
	TEST_ASSERT_EQ(write_range(shared, 100, 0, 64, 1, 64), 0);
	for (unsigned i = 0; i < N; i++) {
		w[i] = (struct worker){.s = &s, .id = i, .shared = shared};
		TEST_ASSERT_EQ(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
	}
	for (unsigned i = 0; i < N; i++)
		pthread_join(t[i], NULL);
	for (unsigned i = 0; i < N; i++) {
		TEST_ASSERT(!w[i].err[0], "worker %u: %s", i, w[i].err);
		total += w[i].pages_checked;
	}
	TEST_ASSERT_EQ(total, (uint64_t)N * NS_PAGES);
	memsvc_close(shared);
	svc_stop(&s);
}

/* memsvc_write_many / memsvc_read_many: many batches on the wire at once,
 * answers matched in order; a refusal in the middle is reported with its
 * reason, the answers still due are taken and the connection stays in
 * step. Inputs tried: pages in a shuffled order and a ragged last batch,
 * never-written pages among written ones, a page out of range in the
 * fourth batch (write and read), a write over the namespace's limit, an
 * empty call. */
static void pipelined(void)
{
	enum { N = 9 * MEMSVC_MAX_BATCH + 17, NS = 2 * N, LIMIT = N + 100 };
	static uint8_t data[N][MEMSVC_PAGE], back[N + 1][MEMSVC_PAGE];
	static uint64_t gfn[N + 1];
	static const void *src[N + 1];
	static bool zero[N + 1];
	struct memsvc_peer s;
	uint64_t epoch = 0;

	memsvc_peer_start(&s, "pipe", 0, NULL);
	struct memsvc_client *c = memsvc_peer_connect(s.port);
	TEST_ASSERT_EQ(memsvc_create(c, "p", TOKEN, NS, LIMIT), 0);
	TEST_ASSERT_EQ(memsvc_open(c, "p", TOKEN, &epoch, NULL), 0);
	/* the even pages of [0, NS), in an order no batch keeps sorted */
	for (unsigned i = 0; i < N; i++) {
		gfn[i] = (uint64_t)((i * 7919u) % N) * 2;
		page_fill(data[i], 1, gfn[i], 3);
		src[i] = data[i];
	}
	TEST_ASSERT_EQ(memsvc_write_many(c, gfn, N, src), 0);
	TEST_ASSERT_EQ(memsvc_write_many(c, gfn, 0, src), 0);
	/* read back reversed, each written page followed by an odd one
	 * (never written), as many pages as fit one call */
	for (unsigned i = 0; i < N; i++)
		gfn[i] = (uint64_t)(N - 1 - i) / 2 * 2 + (i % 2);
	TEST_ASSERT_EQ(memsvc_read_many(c, gfn, N, back, zero), 0);
	for (unsigned i = 0; i < N; i++) {
		bool odd = gfn[i] % 2;
		TEST_ASSERT_EQ(zero[i], odd);
		TEST_ASSERT(odd ? page_all_zero(back[i]) : page_check(back[i], 1, gfn[i], 3),
			    "page %llu (place %u): wrong data", (unsigned long long)gfn[i], i);
	}

	/* a page out of range in the fourth batch */
	for (unsigned i = 0; i < N; i++)
		gfn[i] = i * 2;
	gfn[3 * MEMSVC_MAX_BATCH + 5] = NS;
	TEST_ASSERT_EQ(memsvc_write_many(c, gfn, N, src), -ERANGE);
	TEST_ASSERT(strstr(memsvc_why(c), "out of range"), "why: %s", memsvc_why(c));
	TEST_ASSERT_EQ(memsvc_read_many(c, gfn, N, back, zero), -ERANGE);
	TEST_ASSERT(strstr(memsvc_why(c), "out of range"), "why: %s", memsvc_why(c));
	/* in step: the next answer is the next request's; the first batch
	 * was stored before the refusal came (page 4 holds data[2]) */
	gfn[0] = 4;
	TEST_ASSERT_EQ(memsvc_read(c, gfn, 1, back[0], zero), 0);
	TEST_ASSERT(!memcmp(back[0], data[2], MEMSVC_PAGE), "page 4 after the refusals");

	/* over the limit: N even pages stored, N odd ones do not fit */
	for (unsigned i = 0; i < N; i++)
		gfn[i] = i * 2 + 1;
	TEST_ASSERT_EQ(memsvc_write_many(c, gfn, N, src), -ENOSPC);
	struct memsvc_ns_info info;
	TEST_ASSERT_EQ(memsvc_info(c, &info), 0);
	TEST_ASSERT(info.used_pages <= LIMIT, "used %llu over the limit",
		    (unsigned long long)info.used_pages);
	memsvc_close(c);
	svc_stop(&s);
}

static void bad_requests(void)
{
	struct memsvc_peer s;
	struct memsvc_client *c;
	struct memsvc_hdr a;
	uint32_t code;
	char msg[256];
	uint64_t epoch = 0, gfn[MEMSVC_MAX_BATCH + 1] = {0};
	uint8_t page[MEMSVC_PAGE];
	int fd;

	memsvc_peer_start(&s, "bad", 0, NULL);
	c = memsvc_peer_connect(s.port);
	TEST_ASSERT_EQ(memsvc_create(c, "vm1", TOKEN, 16, 0), 0);

	/* refusals that keep the connection */
	TEST_ASSERT_EQ(memsvc_create(c, "vm1", TOKEN, 16, 0), -EEXIST);
	TEST_ASSERT(strstr(memsvc_why(c), "exists"), "why: %s", memsvc_why(c));
	TEST_ASSERT_EQ(memsvc_open(c, "nosuch", TOKEN, &epoch, NULL), -ENOENT);
	TEST_ASSERT(strstr(memsvc_why(c), "no namespace nosuch"), "why: %s", memsvc_why(c));
	TEST_ASSERT_EQ(memsvc_open(c, "vm1", "wrong-token", &epoch, NULL), -EACCES);
	TEST_ASSERT(strstr(memsvc_why(c), "wrong token"), "why: %s", memsvc_why(c));
	TEST_ASSERT_EQ(memsvc_create(c, "../x", TOKEN, 16, 0), -EINVAL);
	TEST_ASSERT_EQ(memsvc_open(c, "vm1", TOKEN, &epoch, NULL), 0);
	TEST_ASSERT_EQ(epoch, 1);
	gfn[0] = 16;
	TEST_ASSERT_EQ(memsvc_read(c, gfn, 1, page, NULL), -ERANGE);
	TEST_ASSERT(strstr(memsvc_why(c), "out of range"), "why: %s", memsvc_why(c));
	const void *src = page;
	TEST_ASSERT_EQ(memsvc_write(c, gfn, 1, &src), -ERANGE);
	TEST_ASSERT_EQ(memsvc_read(c, gfn, MEMSVC_MAX_BATCH + 1, NULL, NULL), -E2BIG);
	gfn[0] = 15;
	TEST_ASSERT_EQ(memsvc_read(c, gfn, 1, page, NULL), 0); /* still usable */

	/* an oversized batch from a client that does not check: E2BIG, the
	 * connection stays */
	fd = raw_connect(s.port);
	raw_hello(fd);
	raw_open(fd, "vm1", TOKEN);
	uint8_t big[8 + (MEMSVC_MAX_BATCH + 1) * 8];
	struct memsvc_batch b = {.n = MEMSVC_MAX_BATCH + 1};
	memset(big, 0, sizeof(big));
	memcpy(big, &b, sizeof(b));
	raw_record(fd, MEMSVC_READ, 7, big, sizeof(big), false);
	TEST_ASSERT(raw_answer(fd, &a, NULL, 0, &code, msg, sizeof(msg)), "no answer");
	TEST_ASSERT(a.type == MEMSVC_ERROR && code == MEMSVC_E_2BIG && a.id == 7 && !a.flags,
		    "type %#x code %u flags %#x: %s", a.type, code, a.flags, msg);
	raw_record(fd, MEMSVC_INFO, 8, NULL, 0, false);
	TEST_ASSERT(raw_answer(fd, &a, NULL, 0, &code, msg, sizeof(msg)), "no answer after E2BIG");
	TEST_ASSERT(a.type == MEMSVC_INFO_OK && a.id == 8, "type %#x: %s", a.type, msg);
	/* an unknown type: ERROR, then the close */
	raw_record(fd, 0x42, 9, NULL, 0, false);
	TEST_ASSERT(raw_answer(fd, &a, NULL, 0, &code, msg, sizeof(msg)), "no answer");
	TEST_ASSERT(code == MEMSVC_E_PROTO && (a.flags & MEMSVC_F_CLOSE) && strstr(msg, "type"),
		    "code %u flags %#x: %s", code, a.flags, msg);
	TEST_ASSERT(raw_closed(fd), "not closed after an unknown type");
	close(fd);

	/* garbage bytes */
	fd = raw_connect(s.port);
	raw_send(fd, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27);
	TEST_ASSERT(raw_answer(fd, &a, NULL, 0, &code, msg, sizeof(msg)), "no answer to garbage");
	TEST_ASSERT(code == MEMSVC_E_PROTO && strstr(msg, "magic"), "code %u: %s", code, msg);
	TEST_ASSERT(raw_closed(fd), "not closed after garbage");
	close(fd);
	still_serving(&s, "vm1");

	/* a bad CRC */
	fd = raw_connect(s.port);
	struct memsvc_hello hl = {.min_version = 1, .max_version = 1};
	raw_record(fd, MEMSVC_HELLO, 1, &hl, sizeof(hl), true);
	TEST_ASSERT(raw_answer(fd, &a, NULL, 0, &code, msg, sizeof(msg)), "no answer to a bad CRC");
	TEST_ASSERT(code == MEMSVC_E_PROTO && strstr(msg, "CRC"), "code %u: %s", code, msg);
	TEST_ASSERT(raw_closed(fd), "not closed after a bad CRC");
	close(fd);

	/* a request before HELLO, a wrong version, an oversized length */
	fd = raw_connect(s.port);
	raw_record(fd, MEMSVC_INFO, 1, NULL, 0, false);
	TEST_ASSERT(raw_answer(fd, &a, NULL, 0, &code, msg, sizeof(msg)) && code == MEMSVC_E_PROTO,
		    "INFO before HELLO: code %u: %s", code, msg);
	TEST_ASSERT(raw_closed(fd), "not closed");
	close(fd);
	fd = raw_connect(s.port);
	struct memsvc_hdr h = {.magic = MEMSVC_MAGIC, .version = 9, .type = MEMSVC_HELLO};
	raw_send(fd, &h, sizeof(h));
	TEST_ASSERT(raw_answer(fd, &a, NULL, 0, &code, msg, sizeof(msg)) &&
			strstr(msg, "version 9"),
		    "wrong version: code %u: %s", code, msg);
	TEST_ASSERT(raw_closed(fd), "not closed");
	close(fd);
	fd = raw_connect(s.port);
	h = (struct memsvc_hdr){
	    .magic = MEMSVC_MAGIC, .version = 1, .type = MEMSVC_WRITE, .len = 0x7fffffff};
	raw_send(fd, &h, sizeof(h));
	TEST_ASSERT(raw_answer(fd, &a, NULL, 0, &code, msg, sizeof(msg)) &&
			code == MEMSVC_E_PROTO && strstr(msg, "at most"),
		    "oversized: code %u: %s", code, msg);
	TEST_ASSERT(raw_closed(fd), "not closed");
	close(fd);

	/* a truncated record: the header promises more than comes before the
	 * client half-closes; the service drops it without an answer */
	fd = raw_connect(s.port);
	raw_hello(fd);
	h = (struct memsvc_hdr){
	    .magic = MEMSVC_MAGIC, .version = 1, .type = MEMSVC_OPEN, .id = 5, .len = 100};
	raw_send(fd, &h, sizeof(h));
	raw_send(fd, big, 50);
	shutdown(fd, SHUT_WR);
	TEST_ASSERT(raw_closed(fd), "not closed after a truncated record");
	close(fd);
	/* a record whose payload does not match its type */
	for (const uint8_t *t = (const uint8_t[]){MEMSVC_OPEN, MEMSVC_DELETE, 0}; *t; t++) {
		fd = raw_connect(s.port);
		raw_hello(fd);
		raw_record(fd, *t, 3, big, 40, false);
		TEST_ASSERT(raw_answer(fd, &a, NULL, 0, &code, msg, sizeof(msg)) &&
				code == MEMSVC_E_PROTO,
			    "malformed type %#x: code %u: %s", *t, code, msg);
		TEST_ASSERT(raw_closed(fd), "not closed");
		close(fd);
	}
	/* LIST: lengths that do not add up close the connection; no token is
	 * refused, the connection kept */
	fd = raw_connect(s.port);
	raw_hello(fd);
	struct memsvc_list_req lr = {.after_len = 3, .token_len = 0};
	uint8_t lbuf[sizeof(lr) + 3];
	memcpy(lbuf, &lr, sizeof(lr));
	memcpy(lbuf + sizeof(lr), "abc", 3);
	raw_record(fd, MEMSVC_LIST, 4, lbuf, sizeof(lbuf), false);
	TEST_ASSERT(raw_answer(fd, &a, NULL, 0, &code, msg, sizeof(msg)) &&
			code == MEMSVC_E_INVAL && !a.flags && strstr(msg, "token"),
		    "LIST without a token: code %u flags %#x: %s", code, a.flags, msg);
	raw_record(fd, MEMSVC_LIST, 5, lbuf, sizeof(lbuf) - 1, false);
	TEST_ASSERT(raw_answer(fd, &a, NULL, 0, &code, msg, sizeof(msg)) &&
			code == MEMSVC_E_PROTO && (a.flags & MEMSVC_F_CLOSE),
		    "short LIST: code %u: %s", code, msg);
	TEST_ASSERT(raw_closed(fd), "not closed after a short LIST");
	close(fd);

	/* the first client and a new one are both still served */
	gfn[0] = 15;
	TEST_ASSERT_EQ(memsvc_read(c, gfn, 1, page, NULL), -ESTALE); /* still_serving took it */
	still_serving(&s, "vm1");
	memsvc_close(c);
	svc_stop(&s);
}

static void stale_owner(void)
{
	struct memsvc_peer s;
	struct memsvc_client *a, *b, *x;
	struct memsvc_ns_info info;
	uint64_t ea = 0, eb = 0, e, gfn = 5;
	uint8_t page[MEMSVC_PAGE];
	const void *src = page;
	bool z;

	memsvc_peer_start(&s, "stale", 0, NULL);
	a = memsvc_peer_connect(s.port);
	b = memsvc_peer_connect(s.port);
	x = memsvc_peer_connect(s.port);
	TEST_ASSERT_EQ(memsvc_create(a, "vm1", TOKEN, 64, 0), 0);
	TEST_ASSERT_EQ(memsvc_open(a, "vm1", TOKEN, &ea, &info), 0);
	TEST_ASSERT(ea == 1 && info.epoch == 1 && info.used_pages == 0, "epoch %llu",
		    (unsigned long long)ea);
	TEST_ASSERT_EQ(write_range(a, 1, 0, 32, 1, 16), 0);

	/* B takes the namespace over */
	TEST_ASSERT_EQ(memsvc_open(b, "vm1", TOKEN, &eb, &info), 0);
	TEST_ASSERT(eb == 2 && info.used_pages == 32, "epoch %llu used %llu",
		    (unsigned long long)eb, (unsigned long long)info.used_pages);

	TEST_ASSERT_EQ(memsvc_read(a, &gfn, 1, page, &z), -ESTALE);
	TEST_ASSERT(strstr(memsvc_why(a), "namespace vm1 was handed over: epoch 2 is newer than "
					  "yours (1)"),
		    "why: %s", memsvc_why(a));
	page_fill(page, 7, gfn, 7);
	TEST_ASSERT_EQ(memsvc_write(a, &gfn, 1, &src), -ESTALE);
	TEST_ASSERT_EQ(memsvc_info(a, &info), -ESTALE);
	TEST_ASSERT_EQ(memsvc_reconnect(a), -ESTALE);
	e = 1; /* an old epoch on another connection */
	TEST_ASSERT_EQ(memsvc_open(x, "vm1", TOKEN, &e, NULL), -ESTALE);
	e = 9; /* one never given out */
	TEST_ASSERT_EQ(memsvc_open(x, "vm1", TOKEN, &e, NULL), -ESTALE);

	/* the new owner sees what A wrote, untouched by A's refused write */
	for (uint64_t g = 0; g < 64; g++) {
		TEST_ASSERT_EQ(memsvc_read(b, &g, 1, page, &z), 0);
		TEST_ASSERT(g < 32 ? !z && page_check(page, 1, g, 1) : z && page_all_zero(page),
			    "page %llu", (unsigned long long)g);
	}
	TEST_ASSERT_EQ(write_range(b, 2, 32, 40, 1, 8), 0);
	/* B loses its connection and takes the namespace back */
	TEST_ASSERT_EQ(memsvc_reconnect(b), 0);
	TEST_ASSERT_EQ(memsvc_info(b, &info), 0);
	TEST_ASSERT(info.epoch == 2 && info.used_pages == 40, "epoch %llu used %llu",
		    (unsigned long long)info.epoch, (unsigned long long)info.used_pages);
	gfn = 35;
	TEST_ASSERT_EQ(memsvc_read(b, &gfn, 1, page, &z), 0);
	TEST_ASSERT(!z && page_check(page, 2, 35, 1), "page 35 after reconnect");
	memsvc_close(a);
	memsvc_close(b);
	memsvc_close(x);
	svc_stop(&s);
}

static void limits(void)
{
	struct memsvc_peer s;
	struct memsvc_client *c;
	struct memsvc_ns_info info;
	uint64_t epoch = 0, gfn[4];
	uint8_t page[MEMSVC_PAGE];
	const void *src[4] = {page, page, page, page};

	memsvc_peer_start(&s, "limits", 0, "--max-mem", "1M", NULL); /* 256 pages */
	c = memsvc_peer_connect(s.port);
	TEST_ASSERT_EQ(memsvc_create(c, "small", TOKEN, 1000, 10), 0);
	TEST_ASSERT_EQ(memsvc_open(c, "small", TOKEN, &epoch, &info), 0);
	TEST_ASSERT_EQ(info.limit_pages, 10);
	TEST_ASSERT_EQ(write_range(c, 1, 0, 10, 1, 3), 0);
	TEST_ASSERT_EQ(write_range(c, 1, 0, 10, 2, 10), 0); /* rewrites take no room */
	page_fill(page, 1, 500, 1);
	gfn[0] = 500;
	TEST_ASSERT_EQ(memsvc_write(c, gfn, 1, src), -ENOSPC);
	TEST_ASSERT(strstr(memsvc_why(c), "namespace small is full: 10 pages"), "why: %s",
		    memsvc_why(c));
	/* a batch that would cross the limit stores nothing of itself */
	gfn[0] = 3;
	gfn[1] = 600;
	TEST_ASSERT_EQ(memsvc_write(c, gfn, 2, src), -ENOSPC);
	TEST_ASSERT_EQ(memsvc_info(c, &info), 0);
	TEST_ASSERT_EQ(info.used_pages, 10);
	bool z;
	TEST_ASSERT_EQ(memsvc_read(c, gfn, 1, page, &z), 0);
	TEST_ASSERT(page_check(page, 1, 3, 2), "page 3 changed by a refused batch");

	/* --max-mem: 10 promised, 246 left */
	TEST_ASSERT_EQ(memsvc_create(c, "big", TOKEN, 4096, 247), -ENOSPC);
	TEST_ASSERT(strstr(memsvc_why(c), "--max-mem"), "why: %s", memsvc_why(c));
	TEST_ASSERT_EQ(memsvc_create(c, "huge", TOKEN, 4096, 0), -ENOSPC);
	TEST_ASSERT_EQ(memsvc_create(c, "fits", TOKEN, 4096, 246), 0);
	TEST_ASSERT_EQ(memsvc_create(c, "one-more", TOKEN, 1, 0), -ENOSPC);
	/* a deleted namespace gives its room back */
	TEST_ASSERT_EQ(memsvc_delete(c, "fits", TOKEN), 0);
	TEST_ASSERT_EQ(memsvc_create(c, "one-more", TOKEN, 1, 0), 0);
	memsvc_close(c);
	svc_stop(&s);
}

/* A Flit secret's memsvc token: hex up to 127 bytes; beyond, whose hex
 * would not fit a token, "sha256:" and the hex of its digest, which the
 * service takes. */
static void long_secret_token(void)
{
	struct memsvc_peer s;
	struct memsvc_client *c;
	uint8_t secret[255], other[255];
	char tok[2 * 255 + 1], tok2[2 * 255 + 1];
	uint64_t epoch = 0;

	for (unsigned i = 0; i < sizeof(secret); i++) {
		secret[i] = (uint8_t)(i * 37 + 1);
		other[i] = secret[i];
	}
	other[200] ^= 1;
	memsvc_token_text(secret, 16, tok);
	TEST_ASSERT(strlen(tok) == 32 && !strncmp(tok, "01264b7095badf04", 16), "16 bytes: %s",
		    tok);
	memsvc_token_text(secret, 127, tok);
	TEST_ASSERT_EQ(strlen(tok), 254);
	memsvc_token_text(secret, 128, tok);
	TEST_ASSERT(strlen(tok) == 71 && !strncmp(tok, "sha256:", 7), "128 bytes: %s", tok);
	memsvc_token_text(secret, 255, tok);
	memsvc_token_text(other, 255, tok2);
	TEST_ASSERT(strlen(tok) == 71 && strcmp(tok, tok2), "255 bytes: %s / %s", tok, tok2);
	memsvc_token_text(secret, 255, tok2);
	TEST_ASSERT(!strcmp(tok, tok2), "the same secret, the same token");

	memsvc_peer_start(&s, "longtoken", 0, NULL);
	c = memsvc_peer_connect(s.port);
	TEST_ASSERT_EQ(memsvc_create(c, "vm1", tok, 16, 0), 0);
	memsvc_token_text(other, 255, tok2);
	TEST_ASSERT_EQ(memsvc_open(c, "vm1", tok2, &epoch, NULL), -EACCES);
	TEST_ASSERT_EQ(memsvc_open(c, "vm1", tok, &epoch, NULL), 0);
	memsvc_close(c);
	svc_stop(&s);
}

static size_t list_names(struct memsvc_client *c, const char *token, char *out, size_t len,
			 struct memsvc_ns_entry *e, size_t max)
{
	size_t n = 0;
	TEST_ASSERT_EQ(memsvc_list(c, token, e, max, &n), 0);
	out[0] = 0;
	for (size_t i = 0; i < n; i++)
		snprintf(out + strlen(out), len - strlen(out), "%s%s%s", i ? " " : "", e[i].name,
			 e[i].owned ? "*" : "");
	return n;
}

static void delete_and_list(void)
{
	static const char *const names[] = {"vm-f", "vm-b", "vm-e", "vm-a", "vm-d", "vm-c"};
	struct memsvc_peer s;
	struct memsvc_client *a, *b;
	struct memsvc_ns_entry e[16];
	char dir[128], got[256];
	uint64_t ea = 0, eb = 0, gfn = 3;
	uint8_t page[MEMSVC_PAGE];
	bool z;

	snprintf(dir, sizeof(dir), "%s/store-del", memsvc_peer_tmp());
	memsvc_peer_start(&s, "delete", 0, "--dir", dir, NULL);
	a = memsvc_peer_connect(s.port);
	b = memsvc_peer_connect(s.port);
	for (unsigned i = 0; i < ARRAY_SIZE(names); i++)
		TEST_ASSERT_EQ(memsvc_create(a, names[i], TOKEN, 64, 0), 0);
	TEST_ASSERT_EQ(memsvc_create(a, "other", "another-token-456", 8, 0), 0);

	/* By token, in name order, across answers of four. */
	TEST_ASSERT_EQ(list_names(b, TOKEN, got, sizeof(got), e, 16), 6);
	TEST_ASSERT(!strcmp(got, "vm-a vm-b vm-c vm-d vm-e vm-f"), "list: %s", got);
	TEST_ASSERT_EQ(list_names(b, "another-token-456", got, sizeof(got), e, 16), 1);
	TEST_ASSERT(!strcmp(got, "other"), "list: %s", got);
	TEST_ASSERT_EQ(list_names(b, "nobody's-token", got, sizeof(got), e, 16), 0);
	TEST_ASSERT_EQ(list_names(b, TOKEN, got, sizeof(got), e, 5), 5);
	TEST_ASSERT(!strcmp(got, "vm-a vm-b vm-c vm-d vm-e"), "list of 5: %s", got);

	/* A owns vm-a: the list says so; B may not delete it. */
	TEST_ASSERT_EQ(memsvc_open(a, "vm-a", TOKEN, &ea, NULL), 0);
	TEST_ASSERT_EQ(write_range(a, 1, 0, 32, 1, 16), 0);
	list_names(b, TOKEN, got, sizeof(got), e, 16);
	TEST_ASSERT(!strncmp(got, "vm-a* vm-b vm-c", 15) && e[0].info.used_pages == 32 &&
			e[0].info.nr_pages == 64 && e[0].info.epoch == 1,
		    "list: %s, %llu used", got, (unsigned long long)e[0].info.used_pages);
	TEST_ASSERT_EQ(memsvc_delete(b, "vm-a", TOKEN), -EBUSY);
	TEST_ASSERT(strstr(memsvc_why(b), "namespace vm-a is in use"), "why: %s", memsvc_why(b));
	TEST_ASSERT_EQ(memsvc_delete(b, "vm-a", "wrong-token-0000"), -EACCES);
	TEST_ASSERT_EQ(memsvc_delete(b, "nope", TOKEN), -ENOENT);
	TEST_ASSERT_EQ(memsvc_delete(b, "bad/name", TOKEN), -EINVAL);
	TEST_ASSERT_EQ(memsvc_read(a, &gfn, 1, page, &z), 0);
	TEST_ASSERT(!z && page_check(page, 1, 3, 1), "vm-a intact after refused deletes");

	/* B takes it over (A is fenced), then deletes it: A's next call
	 * says it is gone. */
	TEST_ASSERT_EQ(memsvc_open(b, "vm-a", TOKEN, &eb, NULL), 0);
	TEST_ASSERT_EQ(memsvc_delete(b, "vm-a", TOKEN), 0);
	TEST_ASSERT_EQ(memsvc_read(a, &gfn, 1, page, &z), -ENOENT);
	TEST_ASSERT(strstr(memsvc_why(a), "namespace vm-a was deleted"), "why: %s", memsvc_why(a));
	TEST_ASSERT_EQ(memsvc_read(b, &gfn, 1, page, &z), -EINVAL); /* nothing open */
	ea = 0;
	TEST_ASSERT_EQ(memsvc_open(a, "vm-a", TOKEN, &ea, NULL), -ENOENT);
	/* The name is free again, and the new one holds none of the old pages. */
	TEST_ASSERT_EQ(memsvc_create(a, "vm-a", TOKEN, 64, 0), 0);
	ea = 0;
	TEST_ASSERT_EQ(memsvc_open(a, "vm-a", TOKEN, &ea, NULL), 0);
	TEST_ASSERT_EQ(memsvc_read(a, &gfn, 1, page, &z), 0);
	TEST_ASSERT(z && page_all_zero(page), "an old page in the new vm-a");
	/* An owner deletes its own. */
	TEST_ASSERT_EQ(memsvc_delete(a, "vm-a", TOKEN), 0);
	TEST_ASSERT_EQ(memsvc_delete(b, "vm-b", TOKEN), 0);

	/* kill -9 and a restart on the folder: the deleted stay deleted,
	 * their files gone. */
	TEST_ASSERT_EQ(memsvc_peer_kill(&s), 128 + SIGKILL);
	memsvc_peer_start(&s, "delete2", s.port, "--dir", dir, NULL);
	memsvc_close(b);
	b = memsvc_peer_connect(s.port);
	list_names(b, TOKEN, got, sizeof(got), e, 16);
	TEST_ASSERT(!strcmp(got, "vm-c vm-d vm-e vm-f"), "after the restart: %s", got);
	char path[256];
	struct stat st;
	for (const char *const *x = (const char *const[]){"vm-a", "vm-b", NULL}; *x; x++)
		for (const char *const *sfx =
			 (const char *const[]){"meta", "pages", "present", NULL};
		     *sfx; sfx++) {
			snprintf(path, sizeof(path), "%s/%s.%s", dir, *x, *sfx);
			TEST_ASSERT(stat(path, &st) != 0, "%s is still there", path);
		}

	/* The command line, with a token file as flit has it. */
	char tf[256], tok[2 * 64 + 1], addr[64], url[128], log[256], buf[4096];
	const char *secret = "cli-secret-0123456789";
	snprintf(tf, sizeof(tf), "%s/token", memsvc_peer_tmp());
	FILE *f = fopen(tf, "w");
	TEST_ASSERT(f, "token file");
	fprintf(f, "%s\n", secret);
	fclose(f);
	memsvc_token_text((const uint8_t *)secret, strlen(secret), tok);
	TEST_ASSERT_EQ(memsvc_create(b, "cli-vm", tok, 256, 0), 0);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", s.port);
	snprintf(url, sizeof(url), "memsvc://127.0.0.1:%u/cli-vm", s.port);
	snprintf(log, sizeof(log), "%s/cli-admin.log", memsvc_peer_tmp());
	const char *ls[] = {test_build_path("flit-memsvc"), "list", addr, "--token-file", tf, NULL};
	TEST_ASSERT_EQ(proc_wait(proc_spawn(log, ls), 10), 0);
	proc_read_file(log, buf, sizeof(buf));
	TEST_ASSERT(strstr(buf, "NAMESPACE") && strstr(buf, "cli-vm") && strstr(buf, "1 MiB") &&
			!strstr(buf, "vm-c"),
		    "list output: %s", buf);
	const char *rm[] = {
	    test_build_path("flit-memsvc"), "delete", url, "--token-file", tf, NULL};
	TEST_ASSERT_EQ(proc_wait(proc_spawn(log, rm), 10), 0);
	proc_read_file(log, buf, sizeof(buf));
	TEST_ASSERT(strstr(buf, "deleted memsvc://"), "delete output: %s", buf);
	TEST_ASSERT_EQ(proc_wait(proc_spawn(log, rm), 10), 1);
	proc_read_file(log, buf, sizeof(buf));
	TEST_ASSERT(strstr(buf, "no namespace cli-vm"), "second delete: %s", buf);
	const char *bad[] = {
	    test_build_path("flit-memsvc"), "delete", addr, "--token-file", tf, NULL};
	TEST_ASSERT_EQ(proc_wait(proc_spawn(log, bad), 10), 2);
	memsvc_close(a);
	memsvc_close(b);
	svc_stop(&s);
	snprintf(path, sizeof(path), "rm -rf '%s'", dir);
	TEST_ASSERT_EQ(system(path), 0);
}

static void restart_with_dir(void)
{
	struct memsvc_peer s;
	struct memsvc_client *c, *c2;
	struct memsvc_ns_info info;
	char dir[128];
	uint64_t epoch = 0, e2 = 0, gfn;
	uint8_t page[MEMSVC_PAGE];
	const void *src = page;
	bool z;

	snprintf(dir, sizeof(dir), "%s/store", memsvc_peer_tmp());
	memsvc_peer_start(&s, "dir1", 0, "--dir", dir, NULL);
	c = memsvc_peer_connect(s.port);
	c2 = memsvc_peer_connect(s.port);
	TEST_ASSERT_EQ(memsvc_create(c, "vm1", TOKEN, 300, 0), 0);
	TEST_ASSERT_EQ(memsvc_create(c2, "vm2", TOKEN, 10, 0), 0);
	TEST_ASSERT_EQ(memsvc_open(c, "vm1", TOKEN, &epoch, NULL), 0);
	epoch = 0; /* take it twice: epoch 2 must survive */
	TEST_ASSERT_EQ(memsvc_open(c, "vm1", TOKEN, &epoch, NULL), 0);
	TEST_ASSERT_EQ(epoch, 2);
	TEST_ASSERT_EQ(memsvc_open(c2, "vm2", TOKEN, &e2, NULL), 0);
	TEST_ASSERT_EQ(write_range(c, 1, 0, 200, 1, 64), 0);
	TEST_ASSERT_EQ(write_range(c, 1, 100, 150, 2, 7), 0);
	gfn = 250; /* a page of zeros, written: stored, not a hole */
	memset(page, 0, sizeof(page));
	TEST_ASSERT_EQ(memsvc_write(c, &gfn, 1, &src), 0);
	TEST_ASSERT_EQ(write_range(c2, 2, 0, 10, 1, 10), 0);

	TEST_ASSERT_EQ(memsvc_peer_kill(&s), 128 + SIGKILL);
	memsvc_peer_start(&s, "dir2", s.port, "--dir", dir, NULL);
	TEST_ASSERT_EQ(memsvc_reconnect(c), 0);
	TEST_ASSERT_EQ(memsvc_info(c, &info), 0);
	TEST_ASSERT(info.epoch == 2 && info.used_pages == 201 && info.nr_pages == 300,
		    "epoch %llu used %llu nr %llu", (unsigned long long)info.epoch,
		    (unsigned long long)info.used_pages, (unsigned long long)info.nr_pages);
	for (gfn = 0; gfn < 300; gfn++) {
		TEST_ASSERT_EQ(memsvc_read(c, &gfn, 1, page, &z), 0);
		if (gfn < 200)
			TEST_ASSERT(!z && page_check(page, 1, gfn, gfn >= 100 && gfn < 150 ? 2 : 1),
				    "page %llu after the restart", (unsigned long long)gfn);
		else
			TEST_ASSERT(z == (gfn != 250) && page_all_zero(page), "page %llu: zero %d",
				    (unsigned long long)gfn, z);
	}
	TEST_ASSERT_EQ(memsvc_reconnect(c2), 0);
	for (gfn = 0; gfn < 10; gfn++) {
		TEST_ASSERT_EQ(memsvc_read(c2, &gfn, 1, page, &z), 0);
		TEST_ASSERT(!z && page_check(page, 2, gfn, 1), "vm2 page %llu",
			    (unsigned long long)gfn);
	}
	/* the next owner gets the epoch after the persisted one */
	struct memsvc_client *c3 = memsvc_peer_connect(s.port);
	uint64_t e3 = 0;
	TEST_ASSERT_EQ(memsvc_open(c3, "vm1", TOKEN, &e3, NULL), 0);
	TEST_ASSERT_EQ(e3, 3);
	memsvc_close(c3);
	svc_stop(&s);

	/* the epoch handed out just before a clean stop survives too */
	memsvc_peer_start(&s, "dir3", s.port, "--dir", dir, "--sync", NULL);
	TEST_ASSERT_EQ(memsvc_reconnect(c), -ESTALE);
	e3 = 3;
	c3 = memsvc_peer_connect(s.port);
	TEST_ASSERT_EQ(memsvc_open(c3, "vm1", TOKEN, &e3, NULL), 0);
	gfn = 299; /* and a --sync write */
	page_fill(page, 3, gfn, 1);
	TEST_ASSERT_EQ(memsvc_write(c3, &gfn, 1, &src), 0);
	TEST_ASSERT_EQ(memsvc_peer_kill(&s), 128 + SIGKILL);
	memsvc_peer_start(&s, "dir4", s.port, "--dir", dir, NULL);
	TEST_ASSERT_EQ(memsvc_reconnect(c3), 0);
	TEST_ASSERT_EQ(memsvc_read(c3, &gfn, 1, page, &z), 0);
	TEST_ASSERT(!z && page_check(page, 3, gfn, 1), "the --sync page after kill -9");
	memsvc_close(c3);
	svc_stop(&s);

	/* a corrupt metadata file: the service refuses to start, naming it */
	char path[256], buf[4096];
	snprintf(path, sizeof(path), "%s/vm2.meta", dir);
	int fd = open(path, O_RDWR);
	TEST_ASSERT(fd >= 0, "%s: %s", path, strerror(errno));
	TEST_ASSERT_EQ(pwrite(fd, "X", 1, 100), 1);
	close(fd);
	const char *argv[] = {
	    test_build_path("flit-memsvc"), "--listen", "127.0.0.1:0", "--dir", dir, NULL};
	char log[256];
	snprintf(log, sizeof(log), "%s/corrupt.log", memsvc_peer_tmp());
	int rc = proc_wait(proc_spawn(log, argv), 10);
	proc_read_file(log, buf, sizeof(buf));
	TEST_ASSERT(rc == 1 && strstr(buf, "vm2.meta") && strstr(buf, "checksum"),
		    "exit %d, log: %s", rc, buf);
	TEST_ASSERT(!strstr(buf, "listening on"), "started anyway: %s", buf);
	memsvc_close(c);
	memsvc_close(c2);
}

static void client_leaves_mid_request(void)
{
	struct memsvc_peer s;
	struct memsvc_client *c;
	uint8_t buf[MEMSVC_HDR_SIZE + 8 + 8 + MEMSVC_PAGE];
	char log[8192];
	int fd;

	memsvc_peer_start(&s, "leave", 0, NULL);
	c = memsvc_peer_connect(s.port);
	TEST_ASSERT_EQ(memsvc_create(c, "vm1", TOKEN, 16, 0), 0);
	/* half a WRITE, then gone */
	fd = raw_connect(s.port);
	raw_hello(fd);
	raw_open(fd, "vm1", TOKEN);
	struct memsvc_hdr h = {.magic = MEMSVC_MAGIC,
			       .version = 1,
			       .type = MEMSVC_WRITE,
			       .id = 3,
			       .len = 8 + 8 + MEMSVC_PAGE};
	memset(buf, 0xab, sizeof(buf));
	memcpy(buf, &h, sizeof(h));
	raw_send(fd, buf, MEMSVC_HDR_SIZE + 2000);
	close(fd);
	/* a READ of 64 pages whose answer is never read */
	for (int k = 0; k < 4; k++) {
		uint8_t rq[8 + MEMSVC_MAX_BATCH * 8] = {0};
		struct memsvc_batch b = {.n = MEMSVC_MAX_BATCH};
		memcpy(rq, &b, sizeof(b));
		for (unsigned i = 0; i < MEMSVC_MAX_BATCH; i++)
			rq[8 + i * 8] = (uint8_t)(i % 16);
		fd = raw_connect(s.port);
		raw_hello(fd);
		raw_open(fd, "vm1", TOKEN);
		raw_record(fd, MEMSVC_READ, 4, rq, sizeof(rq), false);
		close(fd);
	}
	still_serving(&s, "vm1");
	TEST_ASSERT(proc_wait_log(s.log, "left in the middle of a record", 5),
		    "the service did not see the half record");
	proc_read_tail(s.log, log, sizeof(log));
	TEST_ASSERT(!strstr(log, "error"), "log: %s", log);
	memsvc_close(c);
	svc_stop(&s);
}

/* ---- 1-page read round trip ---- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* The raw baseline's server, a process like the service: takes a request
 * of the READ's size and answers with one of the READ answer's size. */
static void echo_serve(int lfd, size_t req, size_t ans)
{
	int fd = accept(lfd, NULL, NULL), one = 1;
	static uint8_t buf[MEMSVC_HDR_SIZE + 16 + MEMSVC_PAGE];

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	while (raw_read(fd, buf, req))
		if (send(fd, buf, ans, MSG_NOSIGNAL) != (ssize_t)ans)
			break;
	_exit(0);
}

static void pin(pid_t pid, int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(pid, sizeof(set), &set);
}

#define ROUNDS 2000
#define WARM   200

static void report(const char *what, uint64_t *t_svc, uint64_t *t_raw)
{
	qsort(t_svc, ROUNDS, 8, cmp_u64);
	qsort(t_raw, ROUNDS, 8, cmp_u64);
	printf("  1-page read, %s, %d rounds: memsvc_read median %.1f us, p99 %.1f us; raw TCP "
	       "ping-pong of the same sizes median %.1f us, p99 %.1f us\n",
	       what, ROUNDS, t_svc[ROUNDS / 2] / 1e3, t_svc[ROUNDS * 99 / 100] / 1e3,
	       t_raw[ROUNDS / 2] / 1e3, t_raw[ROUNDS * 99 / 100] / 1e3);
}

/* memsvc_read of one page against a raw TCP request/answer of the same
 * sizes (40 and 4136 bytes), both peers separate processes, placed alike:
 * client and server on one CPU, then on two (a cross-CPU wake-up costs
 * far more than either protocol, in a VM above all). */
static void read_latency(void)
{
	static uint64_t t_svc[ROUNDS], t_raw[ROUNDS];
	struct memsvc_peer s;
	struct memsvc_client *c;
	uint64_t epoch = 0, gfn = 1;
	uint8_t page[MEMSVC_PAGE];
	static uint8_t buf[MEMSVC_HDR_SIZE + 16 + MEMSVC_PAGE];
	const size_t req = MEMSVC_HDR_SIZE + 16, ans = MEMSVC_HDR_SIZE + 16 + MEMSVC_PAGE;
	const void *src = page;
	cpu_set_t mine;
	int cpus[2], ncpu = 0, one = 1;
	bool z;

	TEST_ASSERT_EQ(sched_getaffinity(0, sizeof(mine), &mine), 0);
	for (int i = 0; i < CPU_SETSIZE && ncpu < 2; i++)
		if (CPU_ISSET(i, &mine))
			cpus[ncpu++] = i;

	memsvc_peer_start(&s, "latency", 0, NULL);
	c = memsvc_peer_connect(s.port);
	TEST_ASSERT_EQ(memsvc_create(c, "lat", TOKEN, 16, 0), 0);
	TEST_ASSERT_EQ(memsvc_open(c, "lat", TOKEN, &epoch, NULL), 0);
	page_fill(page, 1, gfn, 1);
	TEST_ASSERT_EQ(memsvc_write(c, &gfn, 1, &src), 0);

	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	TEST_ASSERT_EQ(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	TEST_ASSERT_EQ(listen(lfd, 1), 0);
	TEST_ASSERT_EQ(getsockname(lfd, (struct sockaddr *)&a, &al), 0);
	pid_t echo = fork();
	if (echo == 0)
		echo_serve(lfd, req, ans);
	memsvc_peer_track(echo);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	TEST_ASSERT_EQ(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

	for (int placement = 0; placement < ncpu; placement++) {
		pin(0, cpus[0]);
		pin(s.pid, cpus[placement]);
		pin(echo, cpus[placement]);
		for (int i = 0; i < WARM + ROUNDS; i++) {
			uint64_t t0 = now_ns();
			int r = memsvc_read(c, &gfn, 1, page, &z);
			uint64_t t1 = now_ns();
			TEST_ASSERT(r == 0 && !z, "read: %s", memsvc_why(c));
			if (i >= WARM)
				t_svc[i - WARM] = t1 - t0;
		}
		TEST_ASSERT(page_check(page, 1, gfn, 1), "page differs");
		for (int i = 0; i < WARM + ROUNDS; i++) {
			uint64_t t0 = now_ns();
			TEST_ASSERT(send(fd, buf, req, 0) == (ssize_t)req, "send");
			TEST_ASSERT(raw_read(fd, buf, ans), "recv");
			uint64_t t1 = now_ns();
			if (i >= WARM)
				t_raw[i - WARM] = t1 - t0;
		}
		report(placement ? "client and server on two CPUs" : "client and server on one CPU",
		       t_svc, t_raw);
	}
	sched_setaffinity(0, sizeof(mine), &mine);
	close(fd);
	TEST_ASSERT_EQ(proc_wait(echo, 10), 0);
	memsvc_peer_untrack(echo);
	close(lfd);
	memsvc_close(c);
	svc_stop(&s);
}

/* flit-memsvc's own command line: a bad one exits 2 with one line, an
 * address in use exits 1 naming it. */
static void command_line(void)
{
	static const struct {
		const char *args[4];
		const char *text;
	} bad[] = {
	    {{NULL}, "--listen HOST:PORT"},
	    {{"--listen", "nohostport:x"}, "an address is HOST:PORT"},
	    {{"--listen", "127.0.0.1:0", "--max-mem", "lots"}, "--max-mem lots: not a size"},
	    {{"--listen", "127.0.0.1:0", "--sync"}, "--sync needs --dir"},
	    {{"--listen", "127.0.0.1:0", "--frob"}, "unknown option --frob"},
	};
	char log[256], buf[4096];
	struct memsvc_peer s;

	snprintf(log, sizeof(log), "%s/cli.log", memsvc_peer_tmp());
	for (unsigned i = 0; i < ARRAY_SIZE(bad); i++) {
		const char *argv[6] = {test_build_path("flit-memsvc")};
		for (unsigned k = 0; k < 4 && bad[i].args[k]; k++)
			argv[1 + k] = bad[i].args[k];
		int rc = proc_wait(proc_spawn(log, argv), 10);
		proc_read_file(log, buf, sizeof(buf));
		const char *nl = strchr(buf, '\n');
		TEST_ASSERT(rc == 2 && strstr(buf, bad[i].text) && nl && !nl[1],
			    "case %u: exit %d, output: %s", i, rc, buf);
	}
	memsvc_peer_start(&s, "inuse", 0, NULL);
	char addr[32];
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", s.port);
	const char *argv[] = {test_build_path("flit-memsvc"), "--listen", addr, NULL};
	int rc = proc_wait(proc_spawn(log, argv), 10);
	proc_read_file(log, buf, sizeof(buf));
	TEST_ASSERT(rc == 1 && strstr(buf, addr) && strstr(buf, "Address already in use"),
		    "exit %d, output: %s", rc, buf);
	svc_stop(&s);
}

/* A peer that never answers gives -ETIMEDOUT; a service that dies gives a
 * lost connection, then every call fails fast until a reconnect works. */
static void lost_connection(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	char why[256] = "";
	int err = 0, lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct memsvc_client *c;
	struct memsvc_peer s;
	uint64_t epoch = 0, gfn = 1;
	uint8_t page[MEMSVC_PAGE];

	/* the kernel completes the connection from the backlog; nobody
	 * answers the HELLO */
	TEST_ASSERT_EQ(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	TEST_ASSERT_EQ(listen(lfd, 4), 0);
	TEST_ASSERT_EQ(getsockname(lfd, (struct sockaddr *)&a, &al), 0);
	c = memsvc_connect("127.0.0.1", ntohs(a.sin_port), 200, &err, why, sizeof(why));
	TEST_ASSERT(!c && err == -ETIMEDOUT && strstr(why, "no answer"), "err %d: %s", err, why);
	close(lfd);

	memsvc_peer_start(&s, "lost", 0, NULL);
	c = memsvc_peer_connect(s.port);
	TEST_ASSERT_EQ(memsvc_create(c, "vm1", TOKEN, 8, 0), 0);
	TEST_ASSERT_EQ(memsvc_open(c, "vm1", TOKEN, &epoch, NULL), 0);
	TEST_ASSERT_EQ(memsvc_peer_kill(&s), 128 + SIGKILL);
	int r = memsvc_read(c, &gfn, 1, page, NULL);
	TEST_ASSERT(r == -ECONNRESET || r == -EPIPE, "read from a dead service: %d %s", r,
		    memsvc_why(c));
	TEST_ASSERT_EQ(memsvc_info(c, NULL), -ECONNRESET);
	TEST_ASSERT(strstr(memsvc_why(c), "reconnect"), "why: %s", memsvc_why(c));
	r = memsvc_reconnect(c);
	TEST_ASSERT(r == -ECONNREFUSED, "reconnect with no service: %d %s", r, memsvc_why(c));
	/* in memory only: the namespace died with the service */
	memsvc_peer_start(&s, "lost2", s.port, NULL);
	TEST_ASSERT_EQ(memsvc_reconnect(c), -ENOENT);
	TEST_ASSERT_EQ(memsvc_create(c, "vm1", TOKEN, 8, 0), 0); /* connected again */
	memsvc_close(c);
	svc_stop(&s);
}

int main(int argc, char **argv)
{
	static const struct test_case cases[] = {
	    TEST_CASE(many_clients),
	    TEST_CASE(pipelined),
	    TEST_CASE(bad_requests),
	    TEST_CASE(stale_owner),
	    TEST_CASE(limits),
	    TEST_CASE(delete_and_list),
	    TEST_CASE(long_secret_token),
	    TEST_CASE(restart_with_dir),
	    TEST_CASE(client_leaves_mid_request),
	    TEST_CASE(command_line),
	    TEST_CASE(lost_connection),
	    TEST_CASE(read_latency),
	};

	if (!memsvc_peer_setup("flit-memsvc-test"))
		return 1;
	signal(SIGPIPE, SIG_IGN);
	return test_main(argc, argv, cases, ARRAY_SIZE(cases));
}
