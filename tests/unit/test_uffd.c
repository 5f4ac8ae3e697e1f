// SPDX-License-Identifier: MIT
/*
 * The post-copy fault service on plain memory with a real userfaultfd (no
 * KVM): readers fault on missing pages, the fault thread asks once per page,
 * a server thread answers by placing the page; many threads on one page
 * share one request; a background push racing the answers (EEXIST) counts
 * each page once; every byte read is the page's pattern.
 */
#include <errno.h>
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
static uint8_t *ram;

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

static void setup(void)
{
	ram = mmap(NULL, PAGES * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	TEST_ASSERT(ram != MAP_FAILED, "mmap");
	int r = uffd_open(&u, ram, PAGES, 0);
	TEST_ASSERT(r == 0, "userfaultfd: %s", strerror(-r));
	qhead = qtail = requests = answered = 0;
	qstop = false;
	TEST_ASSERT_EQ(uffd_start(&u, request, NULL), 0);
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
	munmap(ram, PAGES * 4096);
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

/* A background push of every page races the readers' faults. */
static void *pusher(void *arg)
{
	uint8_t page[4096];
	(void)arg;
	for (uint64_t g = PAGES; g-- > 0;) {
		pattern(g, page);
		if (uffd_place(&u, g, page, 1))
			return (void *)1;
		usleep(50);
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
	TEST_ASSERT_EQ(uffd_place(&u, 10, page, 1), 0);
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

	ram = mmap(NULL, PAGES * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	TEST_ASSERT(ram != MAP_FAILED, "mmap");
	memset(ram, 7, 4096); /* page 0 present before */
	TEST_ASSERT_EQ(uffd_open(&u, ram, PAGES, 0), 0);
	uffd_mark_present(&u, 0, 1);
	for (uint64_t g = 1; g < PAGES / 2; g++)
		TEST_ASSERT_EQ(uffd_place_zero(&u, g), 0);
	for (uint64_t g = PAGES / 2; g < PAGES; g++) {
		pattern(g, page);
		TEST_ASSERT_EQ(uffd_place(&u, g, page, 1), 0);
	}
	/* Again: all there already, nothing changes, nothing counts twice. */
	TEST_ASSERT_EQ(uffd_place(&u, PAGES / 2, ram + PAGES / 2 * 4096, 4), 0);
	TEST_ASSERT_EQ(uffd_place_zero(&u, 3), 0);
	TEST_ASSERT(uffd_complete(&u), "complete");
	TEST_ASSERT_EQ(u.nr_placed, PAGES);
	TEST_ASSERT_EQ(ram[0], 7);
	TEST_ASSERT_EQ(ram[5 * 4096 + 17], 0);
	pattern(PAGES - 1, page);
	TEST_ASSERT(!memcmp(ram + (PAGES - 1) * 4096, page, 4096), "pattern");
	TEST_ASSERT_EQ(uffd_place(&u, PAGES, page, 1), -ERANGE);
	uffd_close(&u);
	munmap(ram, PAGES * 4096);
}

int main(int argc, char **argv)
{
	static const struct test_case cases[] = {
	    TEST_CASE(many_threads_one_page),
	    TEST_CASE(push_races_faults),
	    TEST_CASE(answer_after_push),
	    TEST_CASE(zero_and_present_pages),
	};
	return test_main(argc, argv, cases, ARRAY_SIZE(cases));
}
