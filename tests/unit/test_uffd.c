// SPDX-License-Identifier: MIT
/*
 * The post-copy fault service on plain memory with a real userfaultfd (no
 * KVM): readers fault on missing pages, the fault thread asks once per page,
 * a server thread answers by placing the page; many threads on one page
 * share one request; a background push racing the answers (EEXIST) counts
 * each page once; every byte read is the page's pattern.
 *
 * Each case runs on anonymous memory (MISSING mode) and on a memfd (MINOR
 * mode): once with stale data in the page cache that must never show
 * (MINOR faults), once with holes (MISSING faults on shared memory). In
 * MINOR mode the push writes straight into the alias, as the receivers do.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"
#include "postcopy/uffd.h"
#include "tests/lib/test.h"

#define PAGES 256

static struct uffd u;
static uint8_t *ram, *alias;
static int memfd = -1;

/* The memory under test: anonymous, or a memfd (MINOR mode) holding stale
 * data, or holes. */
enum mem_kind { ANON, MINOR_STALE, MINOR_HOLES };
static enum mem_kind kind;

/* The page source: a queue of requested pages, served by a thread. */
static pthread_mutex_t qlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t qcond = PTHREAD_COND_INITIALIZER;
static uint64_t queue[PAGES * 4];
static unsigned qhead, qtail, requests, answered;
static bool qstop;
static unsigned answer_us = 200; /* how long an answer takes */

static void pattern(uint64_t gfn, uint8_t *page)
{
	for (unsigned i = 0; i < 4096 / 8; i++) {
		uint64_t v = gfn * 0x9e3779b97f4a7c15ull + i + 1;
		memcpy(page + i * 8, &v, 8);
	}
}

static int request(void *opaque, uint64_t gfn)
{
	(void)opaque;
	pthread_mutex_lock(&qlock);
	queue[qtail++ % (PAGES * 4)] = gfn;
	requests++;
	pthread_cond_signal(&qcond);
	pthread_mutex_unlock(&qlock);
	return 0;
}

static void *server(void *arg)
{
	static uint8_t page[4096];
	(void)arg;
	pthread_mutex_lock(&qlock);
	for (;;) {
		while (qhead == qtail && !qstop)
			pthread_cond_wait(&qcond, &qlock);
		if (qhead == qtail)
			break;
		uint64_t gfn = queue[qhead++ % (PAGES * 4)];
		pthread_mutex_unlock(&qlock);
		usleep(answer_us); /* a network round trip, roughly */
		pattern(gfn, page);
		int r = uffd_place(&u, gfn, page, 1);
		if (r)
			fprintf(stderr, "place %llu: %s\n", (unsigned long long)gfn, strerror(-r));
		pthread_mutex_lock(&qlock);
		answered++;
		pthread_cond_broadcast(&qcond);
	}
	pthread_mutex_unlock(&qlock);
	return NULL;
}

/* Reads every page of [first, first + n) and checks its pattern. */
struct reader {
	uint64_t first, n;
	uint64_t bad;
	pthread_t t;
};

static void *reader(void *arg)
{
	struct reader *r = arg;
	uint8_t want[4096];
	for (uint64_t g = r->first; g < r->first + r->n; g++) {
		pattern(g, want);
		r->bad += memcmp(ram + g * 4096, want, 4096) != 0;
	}
	return NULL;
}

static pthread_t server_t;

/* Waits until the server has answered every request, its bookkeeping
 * included: a reader wakes inside UFFDIO_COPY, before the placement is
 * counted, so the readers being done says nothing about the counters. */
static void wait_answered(void)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 10;
	pthread_mutex_lock(&qlock);
	int r = 0;
	while (answered != requests && r == 0)
		r = pthread_cond_timedwait(&qcond, &qlock, &until);
	unsigned a = answered, q = requests;
	pthread_mutex_unlock(&qlock);
	TEST_ASSERT(a == q, "the server answered %u of %u requests in 10 s", a, q);
}

/* Maps PAGES pages of the kind under test; MINOR_STALE fills every page
 * with a stale copy (through the registered mapping, whose page-table
 * entries are then zapped, as the destination does at the switch). */
static void map_ram(void)
{
	if (kind == ANON) {
		ram = mmap(NULL, PAGES * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			   -1, 0);
		TEST_ASSERT(ram != MAP_FAILED, "mmap");
		alias = NULL;
		return;
	}
	memfd = memfd_create("test-uffd", MFD_CLOEXEC);
	TEST_ASSERT(memfd >= 0, "memfd_create");
	TEST_ASSERT_EQ(ftruncate(memfd, PAGES * 4096), 0);
	ram = mmap(NULL, PAGES * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	alias = mmap(NULL, PAGES * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	TEST_ASSERT(ram != MAP_FAILED && alias != MAP_FAILED, "mmap");
	if (kind == MINOR_STALE) {
		memset(ram, 0xee, PAGES * 4096);
		TEST_ASSERT_EQ(madvise(ram, PAGES * 4096, MADV_DONTNEED), 0);
		TEST_ASSERT_EQ(alias[4096 * 7], 0xee); /* the page cache kept it */
	}
}

static int open_ram(void)
{
	return kind == ANON ? uffd_open(&u, ram, PAGES, 0) : uffd_open_minor(&u, ram, alias, PAGES);
}

static void unmap_ram(void)
{
	munmap(ram, PAGES * 4096);
	if (alias)
		munmap(alias, PAGES * 4096);
	if (memfd >= 0)
		close(memfd);
	memfd = -1;
	alias = NULL;
}

static void setup(void)
{
	map_ram();
	int r = open_ram();
	TEST_ASSERT(r == 0, "userfaultfd: %s", strerror(-r));
	qhead = qtail = requests = answered = 0;
	qstop = false;
	static const struct page_source_ops test_source = {.name = "test server",
							   .request = request};
	TEST_ASSERT_EQ(uffd_start(&u, &test_source, NULL), 0);
	pthread_create(&server_t, NULL, server, NULL);
}

static void teardown(void)
{
	pthread_mutex_lock(&qlock);
	qstop = true;
	pthread_cond_signal(&qcond);
	pthread_mutex_unlock(&qlock);
	pthread_join(server_t, NULL);
	uffd_close(&u);
	unmap_ram();
}

/* A push as a receiver does it: in MINOR mode straight into the alias for
 * the pages it claims, the others into a scratch buffer; else placed from
 * a buffer. */
static int push(uint64_t gfn, const uint8_t *src, uint32_t count)
{
	if (kind == ANON)
		return uffd_place(&u, gfn, src, count);
	static __thread uint8_t scratch[4096];
	uint64_t mine[1] = {0};
	TEST_ASSERT(count <= 64, "a run of at most 64 pages");
	uffd_claim(&u, gfn, count, mine);
	for (uint32_t i = 0; i < count; i++)
		memcpy(mine[0] >> i & 1 ? uffd_alias(&u, gfn + i) : scratch, src + i * 4096, 4096);
	return uffd_continue(&u, gfn, count, mine);
}

/* Eight threads read the same 64 pages: each page is asked for once. */
static void many_threads_one_page(void)
{
	struct reader r[8];

	setup();
	for (int i = 0; i < 8; i++) {
		r[i] = (struct reader){.first = 0, .n = 64};
		pthread_create(&r[i].t, NULL, reader, &r[i]);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(r[i].t, NULL);
		TEST_ASSERT_EQ(r[i].bad, 0);
	}
	wait_answered();
	TEST_ASSERT_EQ(requests, 64);
	TEST_ASSERT_EQ(u.faults, 64);
	TEST_ASSERT_EQ(u.nr_placed, 64);
	TEST_ASSERT(!uffd_complete(&u), "only 64 of %d pages are there", PAGES);
	uint64_t q[3];
	uffd_latency_quantiles(&u, (const double[]){0.5, 0.99, 1.0}, q, 3);
	printf("  64 faults, one request each; latency p50 %llu us, p99 %llu us, max %llu us\n",
	       (unsigned long long)q[0], (unsigned long long)q[1], (unsigned long long)q[2]);
	TEST_ASSERT(q[0] >= 200 && q[0] <= q[1] && q[1] <= q[2],
		    "latencies include the 200 us answer and are ordered");
	teardown();
}

/* A background push of every page, four at a time, races the readers'
 * faults. */
static void *pusher(void *arg)
{
	static uint8_t run[4 * 4096];
	(void)arg;
	for (uint64_t g = PAGES; g >= 4;) {
		g -= 4;
		for (unsigned i = 0; i < 4; i++)
			pattern(g + i, run + i * 4096);
		if (push(g, run, 4))
			return (void *)1;
		usleep(200);
	}
	return NULL;
}

static void push_races_faults(void)
{
	struct reader r[4];
	pthread_t p;

	setup();
	for (int i = 0; i < 4; i++) {
		r[i] = (struct reader){.first = (uint64_t)i * (PAGES / 4), .n = PAGES / 4};
		pthread_create(&r[i].t, NULL, reader, &r[i]);
	}
	pthread_create(&p, NULL, pusher, NULL);
	void *pr;
	pthread_join(p, &pr);
	TEST_ASSERT(pr == NULL, "the push failed");
	for (int i = 0; i < 4; i++) {
		pthread_join(r[i].t, NULL);
		TEST_ASSERT_EQ(r[i].bad, 0);
	}
	/* Let the server answer what is still queued: each answer then finds
	 * its page there. */
	wait_answered();
	TEST_ASSERT(uffd_complete(&u), "every page placed: %llu of %d",
		    (unsigned long long)u.nr_placed, PAGES);
	TEST_ASSERT_EQ(u.nr_placed, PAGES);
	printf("  %llu faults, %llu pulled, %llu placements found the page there\n",
	       (unsigned long long)u.faults, (unsigned long long)u.pulled,
	       (unsigned long long)u.eexist);
	TEST_ASSERT(u.pulled <= u.faults, "a page is pulled only if it was faulted on");
	TEST_ASSERT(u.faults > 0, "the readers faulted ahead of the push");
	teardown();
}

/* The push places a page whose fault's answer is still on its way: the
 * reader wakes with the pushed page, and the late answer finds it there
 * (EEXIST), counted once. */
static void answer_after_push(void)
{
	struct reader r = {.first = 10, .n = 1};
	uint8_t page[4096];

	answer_us = 100000;
	setup();
	pthread_create(&r.t, NULL, reader, &r);
	for (int i = 0; i < 1000 && !__atomic_load_n(&requests, __ATOMIC_ACQUIRE); i++)
		usleep(1000);
	TEST_ASSERT_EQ(requests, 1);
	pattern(10, page);
	TEST_ASSERT_EQ(push(10, page, 1), 0);
	pthread_join(r.t, NULL);
	TEST_ASSERT_EQ(r.bad, 0);
	wait_answered(); /* the late answer arrives */
	TEST_ASSERT_EQ(u.eexist, 1);
	TEST_ASSERT_EQ(u.nr_placed, 1);
	TEST_ASSERT_EQ(u.pulled, 1);
	answer_us = 200;
	teardown();
}

/* Zero pages and pages present before registration count as placed. */
static void zero_and_present_pages(void)
{
	uint8_t page[4096];

	map_ram();
	memset(ram, 7, 4096); /* page 0 present before */
	TEST_ASSERT_EQ(open_ram(), 0);
	uffd_mark_present(&u, 0, 1);
	for (uint64_t g = 1; g < PAGES / 4; g++)
		TEST_ASSERT_EQ(uffd_place_zero(&u, g), 0);
	TEST_ASSERT_EQ(uffd_place_zeros(&u, PAGES / 4, PAGES / 4), 0);
	for (uint64_t g = PAGES / 2; g < PAGES; g++) {
		pattern(g, page);
		TEST_ASSERT_EQ(uffd_place(&u, g, page, 1), 0);
	}
	/* Again: all there already, nothing changes, nothing counts twice. */
	TEST_ASSERT_EQ(uffd_place(&u, PAGES / 2, ram + PAGES / 2 * 4096, 4), 0);
	TEST_ASSERT_EQ(uffd_place_zero(&u, 3), 0);
	TEST_ASSERT_EQ(uffd_place_zeros(&u, 0, 4), 0);
	TEST_ASSERT(uffd_complete(&u), "complete");
	TEST_ASSERT_EQ(u.nr_placed, PAGES);
	TEST_ASSERT_EQ(u.eexist, 4 + 1 + 4);
	TEST_ASSERT_EQ(ram[0], 7);
	TEST_ASSERT_EQ(ram[5 * 4096 + 17], 0);
	TEST_ASSERT_EQ(ram[(PAGES / 4 + 9) * 4096 + 100], 0);
	pattern(PAGES - 1, page);
	TEST_ASSERT(!memcmp(ram + (PAGES - 1) * 4096, page, 4096), "pattern");
	TEST_ASSERT_EQ(uffd_place(&u, PAGES, page, 1), -ERANGE);
	TEST_ASSERT_EQ(uffd_place_zeros(&u, PAGES - 1, 2), -ERANGE);
	uffd_close(&u);
	unmap_ram();
}

/*
 * A page placed (a fault's answer) and written by the guest since must
 * never be overwritten by a copy that arrives later: a push of the old
 * content, alone or in a run with pages still missing, an answer, or a
 * zero page. UFFDIO_COPY refuses on its own (EEXIST); in MINOR mode a
 * write to the alias would go through, and only the claim stops it.
 */
static void late_copy_never_overwrites(void)
{
	static uint8_t run[8 * 4096];
	uint8_t page[4096], want[4096];

	setup();
	pattern(20, page);
	TEST_ASSERT_EQ(uffd_place(&u, 20, page, 1), 0);
	memset(ram + 20 * 4096, 0x5a, 4096); /* the guest writes it */
	memset(want, 0x5a, sizeof(want));
	TEST_ASSERT_EQ(push(20, page, 1), 0);
	TEST_ASSERT(!memcmp(ram + 20 * 4096, want, 4096), "a push overwrote a written page");
	/* A run of eight, page 20 in its middle: the others are placed. */
	for (unsigned i = 0; i < 8; i++)
		pattern(16 + i, run + i * 4096);
	TEST_ASSERT_EQ(push(16, run, 8), 0);
	TEST_ASSERT(!memcmp(ram + 20 * 4096, want, 4096), "a run overwrote a written page");
	for (unsigned i = 0; i < 8; i++)
		if (i != 4)
			TEST_ASSERT(!memcmp(ram + (16 + i) * 4096, run + i * 4096, 4096),
				    "page %u of the run", 16 + i);
	TEST_ASSERT_EQ(uffd_place(&u, 18, run, 4), 0);
	TEST_ASSERT_EQ(uffd_place_zero(&u, 20), 0);
	TEST_ASSERT_EQ(uffd_place_zeros(&u, 19, 3), 0);
	TEST_ASSERT(!memcmp(ram + 20 * 4096, want, 4096), "an answer or a zero page overwrote");
	TEST_ASSERT_EQ(u.nr_placed, 8);
	TEST_ASSERT_EQ(u.eexist, 1 + 1 + 4 + 1 + 3);
	TEST_ASSERT_EQ(requests, 0);
	teardown();
}

/* MINOR: a placed page whose page-table entry went (reclaim, say) faults
 * again; the fault thread maps it again from the page cache without asking
 * for it. */
static void placed_page_unmapped_faults_again(void)
{
	struct reader r = {.first = 30, .n = 2};
	uint8_t page[8192];

	setup();
	pattern(30, page);
	pattern(31, page + 4096);
	TEST_ASSERT_EQ(push(30, page, 2), 0);
	TEST_ASSERT_EQ(madvise(ram + 30 * 4096, 2 * 4096, MADV_DONTNEED), 0);
	pthread_create(&r.t, NULL, reader, &r);
	pthread_join(r.t, NULL);
	TEST_ASSERT_EQ(r.bad, 0);
	TEST_ASSERT_EQ(requests, 0);
	TEST_ASSERT_EQ(u.nr_placed, 2);
	teardown();
}

/* A thread that lost a claim, or gave its pages back (their data never
 * came), leaves them to the next writer. */
static void unclaimed_pages_go_to_the_next_writer(void)
{
	uint64_t a = 0, b = 0;
	uint8_t page[4096];

	setup();
	uffd_claim(&u, 40, 2, &a);
	uffd_claim(&u, 40, 2, &b);
	TEST_ASSERT(a == 3 && b == 0, "first claim wins both: %llx %llx", (unsigned long long)a,
		    (unsigned long long)b);
	uffd_unclaim(&u, 40, 2, &a);
	pattern(41, page);
	TEST_ASSERT_EQ(push(41, page, 1), 0);
	TEST_ASSERT(!memcmp(ram + 41 * 4096, page, 4096), "placed by the next writer");
	TEST_ASSERT_EQ(u.nr_placed, 1);
	teardown();
}

/*
 * How fast a receiver places pages, 64 at a time, no faults: MISSING mode
 * receives into a buffer and copies it in with UFFDIO_COPY; MINOR mode
 * receives straight into the alias and maps with UFFDIO_CONTINUE, into a
 * preallocated memfd (page cache and alias entries there) or one with
 * holes; or, with holes, through the buffer (uffd_place: UFFDIO_COPY into
 * the holes), as the receivers do. A memcpy from a buffer stands for the
 * socket's copy. Prints the figures; checks only that every page arrived.
 */
#define SPEED_PAGES 16384 /* 64 MiB */
static void placement_speed(void)
{
	static const char *names[] = {
	    "MISSING: buffer, UFFDIO_COPY", "MINOR, preallocated: alias, CONTINUE",
	    "MINOR, holes: alias, CONTINUE", "MINOR, holes: buffer, UFFDIO_COPY"};
	uint8_t *wire = malloc(64 * 4096), *buf = malloc(64 * 4096);
	TEST_ASSERT(wire && buf, "malloc");
	memset(wire, 0x3c, 64 * 4096);
	memset(buf, 0, 64 * 4096);
	for (int k = 0; k < 4; k++) {
		size_t len = (size_t)SPEED_PAGES * 4096;
		int fd = -1;
		uint8_t *base, *al = NULL;
		if (k == 0) {
			base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
				    -1, 0);
		} else {
			fd = memfd_create("test-uffd-speed", MFD_CLOEXEC);
			TEST_ASSERT(fd >= 0 && ftruncate(fd, (off_t)len) == 0, "memfd");
			base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
			al = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
			TEST_ASSERT(al != MAP_FAILED, "mmap");
			if (k == 1)
				TEST_ASSERT_EQ(madvise(al, len, MADV_POPULATE_WRITE), 0);
		}
		TEST_ASSERT(base != MAP_FAILED, "mmap");
		int r = k ? uffd_open_minor(&u, base, al, SPEED_PAGES)
			  : uffd_open(&u, base, SPEED_PAGES, 0);
		TEST_ASSERT(r == 0, "userfaultfd: %s", strerror(-r));
		uint64_t t0 = now_ns();
		for (uint64_t g = 0; g < SPEED_PAGES; g += 64) {
			if (k == 0 || k == 3) {
				memcpy(buf, wire, 64 * 4096);
				r = uffd_place(&u, g, buf, 64);
			} else {
				uint64_t mine = 0;
				uffd_claim(&u, g, 64, &mine);
				memcpy(uffd_alias(&u, g), wire, 64 * 4096);
				r = uffd_continue(&u, g, 64, &mine);
			}
			TEST_ASSERT_EQ(r, 0);
		}
		double s = (double)(now_ns() - t0) / 1e9;
		TEST_ASSERT(uffd_complete(&u), "every page placed");
		TEST_ASSERT_EQ(base[len - 1], 0x3c);
		printf("  %-38s %6.0f MB/s (%.2f us a page)\n", names[k], (double)len / s / 1e6,
		       s * 1e6 / SPEED_PAGES);
		uffd_close(&u);
		munmap(base, len);
		if (al)
			munmap(al, len);
		if (fd >= 0)
			close(fd);
	}
	free(wire);
	free(buf);
}

/* Each case on anonymous memory, then on a memfd with stale pages, then
 * with holes. */
#define IN_EACH_KIND(name)                   \
	static void name##_anon(void)        \
	{                                    \
		kind = ANON;                 \
		name();                      \
	}                                    \
	static void name##_minor_stale(void) \
	{                                    \
		kind = MINOR_STALE;          \
		name();                      \
	}                                    \
	static void name##_minor_holes(void) \
	{                                    \
		kind = MINOR_HOLES;          \
		name();                      \
	}
#define CASES(name) \
	TEST_CASE(name##_anon), TEST_CASE(name##_minor_stale), TEST_CASE(name##_minor_holes)

IN_EACH_KIND(many_threads_one_page)
IN_EACH_KIND(push_races_faults)
IN_EACH_KIND(answer_after_push)
IN_EACH_KIND(zero_and_present_pages)
IN_EACH_KIND(late_copy_never_overwrites)

static void placed_page_unmapped_faults_again_minor(void)
{
	kind = MINOR_STALE;
	placed_page_unmapped_faults_again();
}

static void unclaimed_pages_go_to_the_next_writer_minor(void)
{
	kind = MINOR_HOLES;
	unclaimed_pages_go_to_the_next_writer();
}

int main(int argc, char **argv)
{
	static const struct test_case cases[] = {
	    CASES(many_threads_one_page),
	    CASES(push_races_faults),
	    CASES(answer_after_push),
	    CASES(zero_and_present_pages),
	    CASES(late_copy_never_overwrites),
	    TEST_CASE(placed_page_unmapped_faults_again_minor),
	    TEST_CASE(unclaimed_pages_go_to_the_next_writer_minor),
	    TEST_CASE(placement_speed),
	};
	return test_main(argc, argv, cases, ARRAY_SIZE(cases));
}
