// SPDX-License-Identifier: MIT
/*
 * The RDMA part of memsvc without RDMA hardware: the RDMA_INFO answer and
 * its checks against hostile input, the page-to-remote-address translation,
 * the "no device" path of both sides, and the service's refusals of
 * RDMA_INFO and RDMA_COMMIT (non-owner, fenced owner, malformed, no
 * listener), which never store anything. The one-sided transfers themselves
 * need a device: tests/lab/memsvc_rdma_lab.sh runs them over soft-RoCE.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <infiniband/verbs.h>

#include "common/util.h"
#include "memsvc/client.h"
#include "memsvc/proto.h"
#include "memsvc/rdma.h"
#include "tests/lib/memsvc_peer.h"
#include "tests/lib/proc.h"
#include "tests/lib/test.h"

#define TOKEN	 "rdma-token-0123456789"
#define NO_DEV	 "no RDMA device on this machine (ibv_get_device_list found none)"
#define NR_PAGES 64

static bool have_device(void)
{
	int n = 0;
	struct ibv_device **l = ibv_get_device_list(&n);

	if (l)
		ibv_free_device_list(l);
	return l && n > 0;
}

/* ---- the RDMA_INFO answer ---- */

static struct memsvc_rdma_info_wire good_wire(void)
{
	struct memsvc_rdma_info_wire w = {.epoch = 7,
					  .addr = 0x7f0000000000ull,
					  .length = NR_PAGES * MEMSVC_PAGE,
					  .cookie = 0x1122334455667788ull,
					  .rkey = 0xabcd,
					  .cm_port = 4611,
					  .cm_host_len = 8};

	memcpy(w.cm_host, "10.0.0.1", 8);
	return w;
}

static int parse(const struct memsvc_rdma_info_wire *w, uint64_t epoch, char *why)
{
	struct memsvc_rdma_region r;

	return memsvc_rdma_region_parse(w, sizeof(*w), epoch, NR_PAGES, &r, why, 200);
}

static void region_parse(void)
{
	struct memsvc_rdma_info_wire w = good_wire();
	struct memsvc_rdma_region r;
	uint8_t big[sizeof(w) + 1] = {0};
	char why[200];

	TEST_ASSERT_EQ(memsvc_rdma_region_parse(&w, sizeof(w), 7, NR_PAGES, &r, why, sizeof(why)),
		       0);
	TEST_ASSERT(r.epoch == 7 && r.addr == w.addr && r.nr_pages == NR_PAGES &&
			r.rkey == 0xabcd && r.cookie == w.cookie && r.cm_port == 4611 &&
			!strcmp(r.cm_host, "10.0.0.1"),
		    "fields: epoch %llu host %s", (unsigned long long)r.epoch, r.cm_host);

	/* short and oversized payloads */
	TEST_ASSERT_EQ(memsvc_rdma_region_parse(&w, sizeof(w) - 1, 7, NR_PAGES, &r, why, 200),
		       -EPROTO);
	memcpy(big, &w, sizeof(w));
	TEST_ASSERT_EQ(memsvc_rdma_region_parse(big, sizeof(big), 7, NR_PAGES, &r, why, 200),
		       -EPROTO);
	TEST_ASSERT_EQ(memsvc_rdma_region_parse(&w, 0, 7, NR_PAGES, &r, why, 200), -EPROTO);

	/* an rkey of an older (or newer) epoch than the one held */
	TEST_ASSERT_EQ(parse(&w, 8, why), -ESTALE);
	TEST_ASSERT(strstr(why, "epoch 7, this client holds 8"), "why: %s", why);
	TEST_ASSERT_EQ(parse(&w, 6, why), -ESTALE);

	/* a region that is not the namespace's size */
	w.length -= MEMSVC_PAGE;
	TEST_ASSERT_EQ(parse(&w, 7, why), -EPROTO);
	w.length = 0;
	TEST_ASSERT_EQ(parse(&w, 7, why), -EPROTO);
	w = good_wire();
	TEST_ASSERT_EQ(memsvc_rdma_region_parse(&w, sizeof(w), 7, 0, &r, why, 200), -EPROTO);

	/* address + length wrapping around, and the last range that fits */
	w.addr = UINT64_MAX - w.length + 2;
	TEST_ASSERT_EQ(parse(&w, 7, why), -EPROTO);
	TEST_ASSERT(strstr(why, "wraps"), "why: %s", why);
	w.addr = UINT64_MAX;
	TEST_ASSERT_EQ(parse(&w, 7, why), -EPROTO);
	w.addr = UINT64_MAX - w.length;
	TEST_ASSERT_EQ(parse(&w, 7, why), 0);

	/* the listener: port 0, a host too long, bad bytes, junk after it */
	w = good_wire();
	w.cm_port = 0;
	TEST_ASSERT_EQ(parse(&w, 7, why), -EPROTO);
	w = good_wire();
	w.cm_host_len = 64;
	TEST_ASSERT_EQ(parse(&w, 7, why), -EPROTO);
	w = good_wire();
	w.cm_host[2] = '/';
	TEST_ASSERT_EQ(parse(&w, 7, why), -EPROTO);
	w = good_wire();
	w.cm_host[20] = 'x';
	TEST_ASSERT_EQ(parse(&w, 7, why), -EPROTO);
	w = good_wire();
	w.reserved = 1;
	TEST_ASSERT_EQ(parse(&w, 7, why), -EPROTO);
	w = good_wire();
	w.cm_host_len = 0;
	memset(w.cm_host, 0, sizeof(w.cm_host));
	TEST_ASSERT_EQ(parse(&w, 7, why), 0); /* empty: the TCP host */

	/* random payloads: whatever is accepted keeps the invariants */
	unsigned accepted = 0;
	srand(1);
	for (unsigned i = 0; i < 20000; i++) {
		struct memsvc_rdma_info_wire x = good_wire();
		uint8_t *b = (uint8_t *)&x;
		for (unsigned k = 0; k < 1 + (unsigned)rand() % 4; k++)
			b[(unsigned)rand() % sizeof(x)] = (uint8_t)rand();
		if (memsvc_rdma_region_parse(&x, sizeof(x), 7, NR_PAGES, &r, why, 200))
			continue;
		accepted++;
		TEST_ASSERT(r.epoch == 7 && x.length == NR_PAGES * MEMSVC_PAGE &&
				r.addr <= UINT64_MAX - x.length && r.cm_port &&
				strlen(r.cm_host) <= MEMSVC_CM_HOST_MAX,
			    "accepted a bad region (addr %#llx)", (unsigned long long)r.addr);
	}
	TEST_ASSERT(accepted > 0 && accepted < 20000, "accepted %u of 20000", accepted);
}

/* ---- page numbers to remote addresses ---- */

static void remote_addr(void)
{
	struct memsvc_rdma_region r = {.epoch = 3, .addr = 0x10000, .nr_pages = 100};
	uint64_t a = 0;

	TEST_ASSERT_EQ(memsvc_rdma_addr(&r, 0, 1, &a), 0);
	TEST_ASSERT_EQ(a, 0x10000);
	TEST_ASSERT_EQ(memsvc_rdma_addr(&r, 99, 1, &a), 0);
	TEST_ASSERT_EQ(a, 0x10000 + 99 * MEMSVC_PAGE);
	TEST_ASSERT_EQ(memsvc_rdma_addr(&r, 36, 64, &a), 0);
	TEST_ASSERT_EQ(a, 0x10000 + 36 * MEMSVC_PAGE);
	TEST_ASSERT_EQ(memsvc_rdma_addr(&r, 0, 100, &a), 0);
	a = 0xdead;
	TEST_ASSERT_EQ(memsvc_rdma_addr(&r, 100, 1, &a), -ERANGE);
	TEST_ASSERT_EQ(memsvc_rdma_addr(&r, 99, 2, &a), -ERANGE);
	TEST_ASSERT_EQ(memsvc_rdma_addr(&r, 0, 101, &a), -ERANGE);
	TEST_ASSERT_EQ(memsvc_rdma_addr(&r, 5, 0, &a), -ERANGE);
	TEST_ASSERT_EQ(memsvc_rdma_addr(&r, UINT64_MAX, 2, &a), -ERANGE);
	TEST_ASSERT_EQ(memsvc_rdma_addr(&r, 1, UINT64_MAX, &a), -ERANGE);
	TEST_ASSERT_EQ(memsvc_rdma_addr(&r, UINT64_MAX / MEMSVC_PAGE + 1, 1, &a), -ERANGE);
	TEST_ASSERT_EQ(a, 0xdead); /* untouched on refusal */
}

/* ---- the real service, by hand ---- */

/* Sends a request and expects ERROR code (with close or not). */
static void expect_error(int fd, uint8_t type, const void *p, uint32_t len, uint32_t code,
			 bool close, const char *text)
{
	static uint32_t id = 100;
	struct memsvc_hdr h;
	uint8_t payload[4096];
	uint32_t got;
	char msg[256];

	raw_record(fd, type, ++id, p, len, false);
	TEST_ASSERT(raw_answer(fd, &h, payload, sizeof(payload), &got, msg, sizeof(msg)),
		    "no answer");
	TEST_ASSERT(h.type == MEMSVC_ERROR && got == code,
		    "request %#x: answer %#x code %u (%s), %u expected", type, h.type, got, msg,
		    code);
	TEST_ASSERT_EQ(!!(h.flags & MEMSVC_F_CLOSE), close);
	TEST_ASSERT(!text || strstr(msg, text), "message '%s' lacks '%s'", msg, text);
	if (close) {
		char b[64];
		TEST_ASSERT(recv(fd, b, sizeof(b), 0) <= 0, "connection still open");
	}
}

/* ---- cases ---- */

/* Both sides on a machine without a device: one clear line, -ENODEV or
 * exit status 3, no hang. With a device, the same calls must get past the
 * device check (and the TCP-only service then says it has no listener). */
static void no_device(void)
{
	char why[256] = "", buf[4096];
	struct memsvc_rdma *rp = NULL;
	struct memsvc_peer s;
	uint64_t epoch = 0;
	int e;

	memsvc_peer_start(&s, "nodev-tcp", 0, NULL);
	struct memsvc_client *c = memsvc_peer_connect(s.port);
	TEST_ASSERT_EQ(memsvc_create(c, "nd", TOKEN, NR_PAGES, 0), 0);
	TEST_ASSERT_EQ(memsvc_open(c, "nd", TOKEN, &epoch, NULL), 0);
	e = memsvc_rdma_attach(c, 2000, &rp, why, sizeof(why));
	TEST_ASSERT(!rp, "attached without a listener");
	if (!have_device()) {
		TEST_ASSERT_EQ(memsvc_rdma_probe(buf, sizeof(buf)), -ENODEV);
		TEST_ASSERT(!strcmp(buf, NO_DEV), "probe says: %s", buf);
		TEST_ASSERT_EQ(e, -ENODEV);
		TEST_ASSERT(!strcmp(why, NO_DEV), "attach says: %s", why);
	} else {
		TEST_ASSERT_EQ(memsvc_rdma_probe(buf, sizeof(buf)), 0);
		TEST_ASSERT_EQ(e, -EOPNOTSUPP);
		TEST_ASSERT(strstr(why, "no RDMA listener"), "attach says: %s", why);
	}
	/* the TCP path is untouched by the failed attach */
	uint8_t page[MEMSVC_PAGE], back[MEMSVC_PAGE];
	const void *src = page;
	uint64_t gfn = 5;
	memset(page, 0x5c, sizeof(page));
	TEST_ASSERT_EQ(memsvc_write(c, &gfn, 1, &src), 0);
	TEST_ASSERT_EQ(memsvc_read(c, &gfn, 1, back, NULL), 0);
	TEST_ASSERT(!memcmp(page, back, sizeof(page)), "page read back differs");
	memsvc_close(c);
	memsvc_peer_stop(&s, NULL, 0);

	/* the service with --rdma: refuses to start, exit 3, one line */
	snprintf(s.log, sizeof(s.log), "%s/nodev-rdma.log", memsvc_peer_tmp());
	const char *argv[] = {test_build_path("flit-memsvc"),
			      "--listen",
			      "127.0.0.1:0",
			      "--rdma",
			      "127.0.0.1:0",
			      NULL};
	if (have_device()) {
		/* a device: the service must come up and offer RDMA instead */
		memsvc_peer_start(&s, "dev-rdma", 0, "--rdma", "0.0.0.0:0", NULL);
		c = memsvc_peer_connect(s.port);
		TEST_ASSERT(memsvc_has_rdma(c), "HELLO_OK does not offer RDMA");
		memsvc_close(c);
		memsvc_peer_stop(&s, NULL, 0);
		return;
	}
	s.pid = proc_spawn(s.log, argv);
	memsvc_peer_track(s.pid);
	int rc = proc_wait(s.pid, 10);
	memsvc_peer_untrack(s.pid);
	proc_read_file(s.log, buf, sizeof(buf));
	TEST_ASSERT(rc == 3, "exit status %d, 3 expected; log:\n%s", rc, buf);
	TEST_ASSERT(!strcmp(buf, "flit-memsvc: error: --rdma 127.0.0.1:0: " NO_DEV "\n"),
		    "log:\n%s", buf);
}

/* RDMA_INFO: only the current owner, never on a TCP-only service, and the
 * framing rules of every record. */
static void rdma_info_refused(void)
{
	struct memsvc_rdma_region reg;
	struct memsvc_peer s;
	uint64_t e1 = 0, e2 = 0;

	memsvc_peer_start(&s, "info", 0, NULL);
	struct memsvc_client *a = memsvc_peer_connect(s.port), *b = memsvc_peer_connect(s.port);
	TEST_ASSERT(!memsvc_has_rdma(a), "HELLO_OK offers RDMA without a listener");

	/* before HELLO: a framing error */
	int fd = raw_connect(s.port);
	expect_error(fd, MEMSVC_RDMA_INFO, NULL, 0, MEMSVC_E_PROTO, true, "HELLO");
	close(fd);

	/* before OPEN: no namespace */
	fd = raw_connect(s.port);
	TEST_ASSERT_EQ(raw_hello(fd) & MEMSVC_FEAT_RDMA, 0); /* ADMIN only */
	expect_error(fd, MEMSVC_RDMA_INFO, NULL, 0, MEMSVC_E_INVAL, false, "no namespace");
	TEST_ASSERT_EQ(memsvc_rdma_info(a, &reg), -EINVAL);

	TEST_ASSERT_EQ(memsvc_create(a, "inf", TOKEN, NR_PAGES, 0), 0);
	raw_open(fd, "inf", TOKEN);
	TEST_ASSERT_EQ(memsvc_open(a, "inf", TOKEN, &e1, NULL), 0);
	/* the owner, but no listener */
	TEST_ASSERT_EQ(memsvc_rdma_info(a, &reg), -EOPNOTSUPP);
	TEST_ASSERT(strstr(memsvc_why(a), "no RDMA listener"), "why: %s", memsvc_why(a));
	/* a payload where none belongs: framing error */
	uint8_t junk[8] = {0};
	expect_error(fd, MEMSVC_RDMA_INFO, junk, sizeof(junk), MEMSVC_E_PROTO, true, "payload");
	close(fd);

	/* a new owner: the old one is refused, not given a region */
	TEST_ASSERT_EQ(memsvc_open(b, "inf", TOKEN, &e2, NULL), 0);
	TEST_ASSERT_EQ(e2, e1 + 1);
	TEST_ASSERT_EQ(memsvc_rdma_info(a, &reg), -ESTALE);
	TEST_ASSERT(strstr(memsvc_why(a), "handed over"), "why: %s", memsvc_why(a));
	TEST_ASSERT_EQ(memsvc_rdma_info(b, &reg), -EOPNOTSUPP);
	memsvc_close(a);
	memsvc_close(b);
	memsvc_peer_stop(&s, NULL, 0);
}

/* RDMA_COMMIT: refused in every wrong state and shape, and a refused
 * commit stores nothing. */
static void commit_refused(void)
{
	struct memsvc_ns_info info;
	struct memsvc_peer s;
	uint64_t e1 = 0, e2 = 0, gfn[MEMSVC_MAX_BATCH + 1];
	uint8_t buf[1024];
	bool zero[4];
	uint8_t pages[4 * MEMSVC_PAGE];

	for (unsigned i = 0; i < ARRAY_SIZE(gfn); i++)
		gfn[i] = i;
	memsvc_peer_start(&s, "commit", 0, NULL);
	struct memsvc_client *a = memsvc_peer_connect(s.port), *b = memsvc_peer_connect(s.port);
	TEST_ASSERT_EQ(memsvc_rdma_commit(a, gfn, 1), -EINVAL); /* before an open */
	TEST_ASSERT_EQ(memsvc_create(a, "cm", TOKEN, NR_PAGES, 2), 0);

	/* raw owners first (each open makes a new epoch) */
	int fd = raw_connect(s.port);
	raw_hello(fd);
	raw_open(fd, "cm", TOKEN);
	struct memsvc_batch bt = {.n = MEMSVC_MAX_BATCH + 1};
	/* short, over the batch, length that does not match n */
	expect_error(fd, MEMSVC_RDMA_COMMIT, &bt, 4, MEMSVC_E_PROTO, true, "too short");
	close(fd);
	fd = raw_connect(s.port);
	raw_hello(fd);
	raw_open(fd, "cm", TOKEN);
	memcpy(buf, &bt, sizeof(bt));
	expect_error(fd, MEMSVC_RDMA_COMMIT, buf, sizeof(bt), MEMSVC_E_2BIG, false, "at most");
	bt.n = 3;
	memcpy(buf, &bt, sizeof(bt));
	memcpy(buf + sizeof(bt), gfn, 2 * 8);
	expect_error(fd, MEMSVC_RDMA_COMMIT, buf, sizeof(bt) + 2 * 8, MEMSVC_E_PROTO, true,
		     "expected");
	close(fd);

	TEST_ASSERT_EQ(memsvc_open(a, "cm", TOKEN, &e1, NULL), 0);
	/* a page out of range, a batch too big from the client */
	uint64_t far[2] = {1, NR_PAGES};
	TEST_ASSERT_EQ(memsvc_rdma_commit(a, far, 2), -ERANGE);
	TEST_ASSERT_EQ(memsvc_rdma_commit(a, gfn, MEMSVC_MAX_BATCH + 1), -E2BIG);
	/* the owner, but nothing can have been written one-sided */
	TEST_ASSERT_EQ(memsvc_rdma_commit(a, gfn, 2), -EOPNOTSUPP);
	/* a fenced owner */
	TEST_ASSERT_EQ(memsvc_open(b, "cm", TOKEN, &e2, NULL), 0);
	TEST_ASSERT_EQ(memsvc_rdma_commit(a, gfn, 2), -ESTALE);

	/* nothing of it was stored */
	TEST_ASSERT_EQ(memsvc_info(b, &info), 0);
	TEST_ASSERT_EQ(info.used_pages, 0);
	TEST_ASSERT_EQ(memsvc_read(b, gfn, 4, pages, zero), 0);
	TEST_ASSERT(zero[0] && zero[1] && zero[2] && zero[3], "a refused commit stored pages");
	memsvc_close(a);
	memsvc_close(b);
	memsvc_peer_stop(&s, NULL, 0);
}

/* ---- a hostile service: answers RDMA_INFO for another epoch ---- */

struct fake {
	int lfd;
	uint16_t port;
	uint64_t answer_epoch; /* in RDMA_INFO_OK; OPEN_OK says 5 */
	pthread_t t;
};

static void *fake_main(void *arg)
{
	struct fake *f = arg;
	int fd = accept(f->lfd, NULL, NULL);
	struct memsvc_hdr h;
	uint8_t payload[1024];

	while (fd >= 0 && raw_read(fd, &h, sizeof(h)) && h.len <= sizeof(payload) &&
	       raw_read(fd, payload, h.len)) {
		if (h.type == MEMSVC_HELLO) {
			struct memsvc_hello_ok ok = {.version = 1,
						     .max_batch = MEMSVC_MAX_BATCH,
						     .page_size = MEMSVC_PAGE,
						     .features = MEMSVC_FEAT_RDMA};
			raw_record(fd, MEMSVC_HELLO_OK, h.id, &ok, sizeof(ok), false);
		} else if (h.type == MEMSVC_OPEN) {
			struct memsvc_info_wire w = {
			    .nr_pages = NR_PAGES, .limit_pages = NR_PAGES, .epoch = 5};
			raw_record(fd, MEMSVC_OPEN_OK, h.id, &w, sizeof(w), false);
		} else if (h.type == MEMSVC_RDMA_INFO) {
			struct memsvc_rdma_info_wire w = good_wire();
			w.epoch = f->answer_epoch;
			raw_record(fd, MEMSVC_RDMA_INFO_OK, h.id, &w, sizeof(w), false);
		} else {
			break;
		}
	}
	if (fd >= 0)
		close(fd);
	return NULL;
}

static void fake_start(struct fake *f, uint64_t answer_epoch)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t al = sizeof(a);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	f->answer_epoch = answer_epoch;
	f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	TEST_ASSERT(f->lfd >= 0 && !bind(f->lfd, (struct sockaddr *)&a, sizeof(a)) &&
			!listen(f->lfd, 1) && !getsockname(f->lfd, (struct sockaddr *)&a, &al),
		    "listen: %s", strerror(errno));
	f->port = ntohs(a.sin_port);
	TEST_ASSERT_EQ(pthread_create(&f->t, NULL, fake_main, f), 0);
}

static void hostile_region(void)
{
	static const uint64_t epochs[] = {4, 6, 5};
	struct memsvc_rdma_region reg;

	for (unsigned i = 0; i < ARRAY_SIZE(epochs); i++) {
		struct fake f;
		uint64_t epoch = 0;
		fake_start(&f, epochs[i]);
		struct memsvc_client *c = memsvc_peer_connect(f.port);
		TEST_ASSERT(memsvc_has_rdma(c), "features not seen");
		TEST_ASSERT_EQ(memsvc_open(c, "h", TOKEN, &epoch, NULL), 0);
		TEST_ASSERT_EQ(epoch, 5);
		int e = memsvc_rdma_info(c, &reg);
		if (epochs[i] == 5) {
			TEST_ASSERT_EQ(e, 0);
			TEST_ASSERT(reg.rkey == 0xabcd && reg.nr_pages == NR_PAGES, "region");
		} else {
			/* a region for another epoch: the connection is dropped */
			TEST_ASSERT_EQ(e, -EPROTO);
			TEST_ASSERT(strstr(memsvc_why(c), "this client holds 5"), "why: %s",
				    memsvc_why(c));
			TEST_ASSERT_EQ(memsvc_rdma_info(c, &reg), -ECONNRESET);
		}
		memsvc_close(c);
		pthread_join(f.t, NULL);
		close(f.lfd);
	}
}

int main(int argc, char **argv)
{
	static const struct test_case cases[] = {
	    TEST_CASE(region_parse),	  TEST_CASE(remote_addr),    TEST_CASE(hostile_region),
	    TEST_CASE(rdma_info_refused), TEST_CASE(commit_refused), TEST_CASE(no_device),
	};

	if (!memsvc_peer_setup("flit-memsvc-rdma"))
		return 1;
	signal(SIGPIPE, SIG_IGN);
	return test_main(argc, argv, cases, ARRAY_SIZE(cases));
}
