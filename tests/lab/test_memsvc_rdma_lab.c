// SPDX-License-Identifier: MIT
/*
 * memsvc's RDMA page path for real, on a device (soft-RoCE in the lab:
 * tests/lab/memsvc_rdma.sh sets it up and runs this). flit-memsvc serves
 * with --rdma on FLIT_RDMA_ADDR; an owner moves pages one-sided and checks
 * them both ways (RDMA and TCP); a page written but not committed is not
 * reported stored; after a hand-over the old owner's one-sided writes fail
 * in the NIC and the new owner's pages are untouched.
 *
 * Without a device it fails (it is never a skip): the wrapper only runs it
 * where soft-RoCE was set up.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "memsvc/client.h"
#include "memsvc/rdma.h"
#include "tests/lib/memsvc_peer.h"
#include "tests/lib/proc.h"
#include "tests/lib/test.h"

#define TOKEN	 "lab-rdma-token"
#define NR_PAGES 512

static struct memsvc_peer svc;
static const char *rdma_host;

/* dir: NULL for pages in memory */
static void svc_start(const char *dir)
{
	static unsigned runs;
	char rdma[96], name[16], buf[8192];

	snprintf(rdma, sizeof(rdma), "%s:0", rdma_host);
	snprintf(name, sizeof(name), "svc%u", runs++);
	memsvc_peer_start(&svc, name, 0, "--rdma", rdma, "-v", dir ? "--dir" : NULL, dir, NULL);
	proc_read_file(svc.log, buf, sizeof(buf));
	TEST_ASSERT(strstr(buf, "RDMA on "), "log:\n%s", buf);
}

static struct memsvc_rdma *attach(struct memsvc_client *c)
{
	struct memsvc_rdma *r = NULL;
	char why[256] = "";
	int e = memsvc_rdma_attach(c, 5000, &r, why, sizeof(why));

	TEST_ASSERT(e == 0 && r, "attach: %d %s", e, why);
	return r;
}

/* One-sided writes and reads, checked through both paths. */
static void pages_both_ways(void)
{
	static uint8_t pages[MEMSVC_MAX_BATCH][MEMSVC_PAGE], back[MEMSVC_MAX_BATCH * MEMSVC_PAGE];
	const void *src[MEMSVC_MAX_BATCH];
	uint64_t gfn[MEMSVC_MAX_BATCH], epoch = 0, written = 0;
	struct memsvc_ns_info info;
	bool zero[MEMSVC_MAX_BATCH];

	svc_start(NULL);
	struct memsvc_client *c = memsvc_peer_connect(svc.port);
	TEST_ASSERT(memsvc_has_rdma(c), "HELLO_OK does not offer RDMA");
	TEST_ASSERT_EQ(memsvc_create(c, "lab", TOKEN, NR_PAGES, 0), 0);
	TEST_ASSERT_EQ(memsvc_open(c, "lab", TOKEN, &epoch, NULL), 0);
	struct memsvc_rdma *r = attach(c);

	/* every third page, in batches of 1 to 64, by RDMA */
	static const unsigned sizes[] = {1, 64, 7, 33, 2, 64};
	uint64_t next = 0;
	for (unsigned b = 0; b < ARRAY_SIZE(sizes) && next < NR_PAGES; b++) {
		unsigned n = 0;
		for (; n < sizes[b] && next < NR_PAGES; n++, next += 3) {
			gfn[n] = next;
			page_fill(pages[n], 0, next, 1);
			src[n] = pages[n];
		}
		TEST_ASSERT(memsvc_rdma_write(r, gfn, n, src) == 0, "rdma write: %s",
			    memsvc_rdma_why(r));
		written += n;
	}
	TEST_ASSERT_EQ(memsvc_info(c, &info), 0);
	TEST_ASSERT_EQ(info.used_pages, written);

	/* back by RDMA and by TCP, in other batch sizes */
	uint64_t end = MIN(next, NR_PAGES);
	for (uint64_t g = 0; g < end; g += 40) {
		unsigned n = (unsigned)MIN(40, end - g);
		for (unsigned i = 0; i < n; i++)
			gfn[i] = g + i;
		TEST_ASSERT(memsvc_rdma_read(r, gfn, n, back) == 0, "rdma read: %s",
			    memsvc_rdma_why(r));
		for (unsigned i = 0; i < n; i++) {
			uint8_t *p = back + (size_t)i * MEMSVC_PAGE;
			bool ours = gfn[i] % 3 == 0;
			TEST_ASSERT(ours ? page_check(p, 0, gfn[i], 1) : page_all_zero(p),
				    "page %llu by RDMA", (unsigned long long)gfn[i]);
		}
		TEST_ASSERT_EQ(memsvc_read(c, gfn, n, back, zero), 0);
		for (unsigned i = 0; i < n; i++) {
			bool ours = gfn[i] % 3 == 0;
			TEST_ASSERT(zero[i] == !ours, "page %llu zero flag %d",
				    (unsigned long long)gfn[i], zero[i]);
			TEST_ASSERT(!ours ||
					page_check(back + (size_t)i * MEMSVC_PAGE, 0, gfn[i], 1),
				    "page %llu by TCP", (unsigned long long)gfn[i]);
		}
	}

	/* a TCP write is seen by an RDMA read */
	gfn[0] = 1;
	page_fill(pages[0], 0, 1, 2);
	src[0] = pages[0];
	TEST_ASSERT_EQ(memsvc_write(c, gfn, 1, src), 0);
	TEST_ASSERT_EQ(memsvc_rdma_read(r, gfn, 1, back), 0);
	TEST_ASSERT(page_check(back, 0, 1, 2), "TCP write not seen by RDMA");

	/* placed but not committed: not stored, until the commit */
	gfn[0] = 2;
	page_fill(pages[0], 0, 2, 3);
	TEST_ASSERT_EQ(memsvc_rdma_put(r, gfn, 1, src), 0);
	TEST_ASSERT_EQ(memsvc_read(c, gfn, 1, back, zero), 0);
	TEST_ASSERT(zero[0], "an uncommitted page was reported stored");
	TEST_ASSERT_EQ(memsvc_rdma_commit(c, gfn, 1), 0);
	TEST_ASSERT_EQ(memsvc_read(c, gfn, 1, back, zero), 0);
	TEST_ASSERT(!zero[0] && page_check(back, 0, 2, 3), "committed page");

	/* out of range is refused before anything is posted */
	gfn[0] = NR_PAGES;
	TEST_ASSERT_EQ(memsvc_rdma_read(r, gfn, 1, back), -ERANGE);
	TEST_ASSERT_EQ(memsvc_rdma_read(r, (uint64_t[]){0}, 1, back), 0);

	memsvc_rdma_detach(r);
	memsvc_close(c);
}

/* After a hand-over the old owner's rkey is dead in the NIC. */
static void stale_owner_fenced(void)
{
	static uint8_t page[MEMSVC_PAGE], back[MEMSVC_PAGE];
	const void *src[1] = {page};
	uint64_t gfn[1] = {9}, ea = 0, eb = 0;
	struct memsvc_rdma_region reg;
	char why[256];
	bool zero;

	struct memsvc_client *a = memsvc_peer_connect(svc.port), *b = memsvc_peer_connect(svc.port);
	TEST_ASSERT_EQ(memsvc_open(a, "lab", TOKEN, &ea, NULL), 0);
	struct memsvc_rdma *ra = attach(a);
	page_fill(page, 0, 9, 10);
	TEST_ASSERT(memsvc_rdma_write(ra, gfn, 1, src) == 0, "%s", memsvc_rdma_why(ra));
	uint32_t old_rkey = memsvc_rdma_region(ra)->rkey;

	/* b takes the namespace */
	TEST_ASSERT_EQ(memsvc_open(b, "lab", TOKEN, &eb, NULL), 0);
	TEST_ASSERT_EQ(eb, ea + 1);

	/* a's one-sided write fails in the NIC, nothing reaches the page */
	page_fill(page, 0, 9, 11);
	int e = memsvc_rdma_put(ra, gfn, 1, src);
	printf("stale owner's RDMA write: %d (%s)\n", e, memsvc_rdma_why(ra));
	TEST_ASSERT(e == -EACCES || e == -ECONNRESET, "stale write gave %d: %s", e,
		    memsvc_rdma_why(ra));
	TEST_ASSERT_EQ(memsvc_rdma_read(ra, gfn, 1, back), e); /* the path is dead */
	TEST_ASSERT_EQ(memsvc_rdma_commit(a, gfn, 1), -ESTALE);
	TEST_ASSERT_EQ(memsvc_rdma_info(a, &reg), -ESTALE);
	struct memsvc_rdma *again = NULL;
	TEST_ASSERT_EQ(memsvc_rdma_attach(a, 3000, &again, why, sizeof(why)), -ESTALE);
	/* nor does a new QP with the old epoch's cookie get in */
	reg = *memsvc_rdma_region(ra);
	TEST_ASSERT_EQ(memsvc_rdma_connect(a, &reg, 3000, &again, why, sizeof(why)), -ECONNREFUSED);
	TEST_ASSERT(!again, "a QP for a handed-over epoch");
	printf("old cookie: %s\n", why);

	/* the new owner sees the page as a left it, by TCP and by RDMA */
	TEST_ASSERT_EQ(memsvc_read(b, gfn, 1, back, &zero), 0);
	TEST_ASSERT(!zero && page_check(back, 0, 9, 10), "the stale write reached the page");
	struct memsvc_rdma *rb = attach(b);
	TEST_ASSERT(memsvc_rdma_region(rb)->rkey != old_rkey, "the same rkey for a new epoch");
	TEST_ASSERT_EQ(memsvc_rdma_read(rb, gfn, 1, back), 0);
	TEST_ASSERT(page_check(back, 0, 9, 10), "page by RDMA after the hand-over");
	page_fill(page, 0, 9, 12);
	TEST_ASSERT(memsvc_rdma_write(rb, gfn, 1, src) == 0, "%s", memsvc_rdma_why(rb));
	TEST_ASSERT_EQ(memsvc_read(b, gfn, 1, back, &zero), 0);
	TEST_ASSERT(page_check(back, 0, 9, 12), "new owner's write");

	memsvc_rdma_detach(ra);
	memsvc_rdma_detach(rb);
	memsvc_close(a);
	memsvc_close(b);

	char buf[16384];
	memsvc_peer_stop(&svc, buf, sizeof(buf));
	TEST_ASSERT(strstr(buf, "RDMA access of epoch"), "no revocation in the log:\n%s", buf);
}

/* --dir: the pages are a shared file mapping (on the lab's tmpfs, which
 * the kernel lets a NIC pin; a disk file system may refuse). A page written
 * one-sided and committed survives a restart of the service. */
static void with_dir(void)
{
	static uint8_t page[MEMSVC_PAGE], back[MEMSVC_PAGE];
	const void *src[1] = {page};
	uint64_t gfn[1] = {17}, epoch = 0;
	char dir[128], why[256] = "";
	struct memsvc_rdma *r = NULL;
	bool zero;

	snprintf(dir, sizeof(dir), "%s/store", memsvc_peer_tmp());
	svc_start(dir);
	struct memsvc_client *c = memsvc_peer_connect(svc.port);
	TEST_ASSERT_EQ(memsvc_create(c, "disk", TOKEN, 64, 0), 0);
	TEST_ASSERT_EQ(memsvc_open(c, "disk", TOKEN, &epoch, NULL), 0);
	int e = memsvc_rdma_attach(c, 5000, &r, why, sizeof(why));
	TEST_ASSERT(e == 0, "attach with --dir: %d %s", e, why);
	page_fill(page, 0, 17, 20);
	TEST_ASSERT(memsvc_rdma_write(r, gfn, 1, src) == 0, "%s", memsvc_rdma_why(r));
	memsvc_rdma_detach(r);
	memsvc_close(c);
	memsvc_peer_stop(&svc, NULL, 0);
	svc_start(dir);
	c = memsvc_peer_connect(svc.port);
	TEST_ASSERT_EQ(memsvc_open(c, "disk", TOKEN, &epoch, NULL), 0);
	TEST_ASSERT_EQ(memsvc_read(c, gfn, 1, back, &zero), 0);
	TEST_ASSERT(!zero && page_check(back, 0, 17, 20), "the committed page after a restart: %s",
		    zero ? "never written" : "other data");
	memsvc_close(c);
	memsvc_peer_stop(&svc, NULL, 0);
}

int main(int argc, char **argv)
{
	static const struct test_case cases[] = {
	    TEST_CASE(pages_both_ways),
	    TEST_CASE(stale_owner_fenced),
	    TEST_CASE(with_dir),
	};
	char why[256];

	rdma_host = getenv("FLIT_RDMA_ADDR");
	if (!rdma_host || memsvc_rdma_probe(why, sizeof(why))) {
		fprintf(stderr, "no RDMA to test on: FLIT_RDMA_ADDR=%s, %s\n",
			rdma_host ? rdma_host : "(unset)", rdma_host ? why : "");
		return 1;
	}
	if (!memsvc_peer_setup("flit-rdma-lab"))
		return 1;
	signal(SIGPIPE, SIG_IGN);
	return test_main(argc, argv, cases, ARRAY_SIZE(cases));
}
