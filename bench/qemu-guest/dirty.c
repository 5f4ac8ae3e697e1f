// SPDX-License-Identifier: MIT
/*
 * dirty: /init of the Linux guest that bench/qemu_ref.py migrates between
 * two QEMU processes: the same workload as Flit's memcheck guest, as a
 * static program on Debian's kernel.
 *
 * It fills fill= MiB of its memory with the memcheck pattern
 * (guests/pattern.h: every word a function of the page number and its
 * generation, never zero), then one thread per CPU rewrites its slice of
 * the first hot= MiB round after round, rate= pages per second per thread
 * (0: as fast as it can), keeping every page's generation in a table; with
 * order=random, each thread's round is as many pages picked at random from
 * its slice of all the filled memory (memcheck's order=random). It
 * records the longest gap between two of its checkpoints (every 64 pages)
 * in CLOCK_MONOTONIC: its stall. Under TCG the guest's clocks stop while
 * QEMU has the VM stopped, so that stall leaves the migration's downtime
 * out; QEMU's own downtime figure says it.
 *
 * Parameters come from the kernel command line (fill=, hot=, rate=, order=), which
 * the kernel hands to init as its environment. Lines on the serial console
 * (ttyS0) are commands; every answer is one line starting with "DIRTY ":
 *
 *   DIRTY ready fill_mib=N hot_mib=H threads=T fill_ms=X
 *   stats   DIRTY stats rounds=R pages=P secs=S rate_pps=X stall_ms=Y
 *   verify  DIRTY verify ok|bad pages=N bad=B stall_ms=Y rounds=R pages_written=P
 *                   secs=S rate_pps=X   (the writers stop first, then go on)
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "guests/pattern.h"

#define PAGE	    4096UL
#define CHECKPOINT  64 /* pages between two clock reads */
#define MAX_THREADS 64
#define NBUCKETS    256 /* quarter octaves of nanoseconds */

static uint8_t *mem;
static uint32_t *gen; /* every page's generation */
static uint64_t npages, nhot, rate;
static int random_order;
static unsigned nthreads;
static atomic_int stop;
static int con = 1;

struct writer {
	pthread_t t;
	uint64_t first, count; /* its slice of the hot set */
	uint64_t lo, span;     /* order=random: its slice of all pages */
	atomic_uint_fast64_t rounds, pages;
	atomic_uint_fast64_t stall_ns;
	uint64_t last_ns;
};
static struct writer writers[MAX_THREADS];

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf) - 2, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(buf) - 3)
		n = (int)sizeof(buf) - 3;
	buf[n++] = '\r';
	buf[n++] = '\n';
	for (int off = 0; off < n;) {
		ssize_t w = write(con, buf + off, (size_t)(n - off));
		if (w <= 0)
			break;
		off += (int)w;
	}
}

static uint64_t env_u64(const char *name, uint64_t def)
{
	const char *v = getenv(name);

	return v && *v ? strtoull(v, NULL, 0) : def;
}

static void checkpoint(struct writer *w)
{
	uint64_t t = now_ns(), gap = t - w->last_ns;

	if (gap > atomic_load(&w->stall_ns))
		atomic_store(&w->stall_ns, gap);
	w->last_ns = t;
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	uint64_t t0 = now_ns(), done = 0;
	uint64_t x = 0x9e3779b97f4a7c15ULL * (uint64_t)(w - writers + 1); /* xorshift64 */

	w->last_ns = t0;
	while (!atomic_load(&stop)) {
		for (uint64_t i = 0; i < w->count && !atomic_load(&stop); i++) {
			uint64_t pg = w->first + i;
			if (random_order) {
				x ^= x << 13;
				x ^= x >> 7;
				x ^= x << 17;
				pg = w->lo + x % w->span;
			}
			flit_pattern_fill((volatile uint64_t *)(mem + pg * PAGE), pg, gen[pg] + 1);
			gen[pg]++;
			done++;
			atomic_store(&w->pages, done);
			if (done % CHECKPOINT)
				continue;
			checkpoint(w);
			if (rate) {
				/* Where the schedule says we should be. */
				uint64_t due = t0 + done * 1000000000ULL / rate, t = now_ns();
				if (due > t) {
					struct timespec ts = {
					    .tv_sec = (time_t)((due - t) / 1000000000ULL),
					    .tv_nsec = (long)((due - t) % 1000000000ULL)};
					nanosleep(&ts, NULL);
					w->last_ns = now_ns(); /* a planned sleep is no stall */
				}
			}
		}
		atomic_fetch_add(&w->rounds, 1);
	}
	return NULL;
}

static void start_writers(void)
{
	atomic_store(&stop, 0);
	for (unsigned i = 0; i < nthreads; i++) {
		struct writer *w = &writers[i];
		w->first = nhot * i / nthreads;
		w->count = nhot * (i + 1) / nthreads - w->first;
		w->lo = npages * i / nthreads;
		w->span = npages * (i + 1) / nthreads - w->lo;
		if (pthread_create(&w->t, NULL, writer_main, w))
			say("DIRTY error pthread_create");
	}
}

static void stop_writers(void)
{
	atomic_store(&stop, 1);
	for (unsigned i = 0; i < nthreads; i++)
		pthread_join(writers[i].t, NULL);
}

/* Totals over the writers: rounds (the slowest's), pages, stall. */
static void totals(uint64_t *rounds, uint64_t *pages, double *stall_ms)
{
	uint64_t r = UINT64_MAX, p = 0, s = 0;

	for (unsigned i = 0; i < nthreads; i++) {
		uint64_t wr = atomic_load(&writers[i].rounds),
			 ws = atomic_load(&writers[i].stall_ns);
		r = wr < r ? wr : r;
		p += atomic_load(&writers[i].pages);
		s = ws > s ? ws : s;
	}
	*rounds = nthreads ? r : 0;
	*pages = p;
	*stall_ms = (double)s / 1e6;
}

static uint64_t verify(void)
{
	uint64_t bad = 0;

	for (uint64_t pg = 0; pg < npages; pg++)
		if (!flit_pattern_check((const volatile uint64_t *)(mem + pg * PAGE), pg, gen[pg]))
			bad++;
	return bad;
}

static void console_open(void)
{
	mkdir("/dev", 0755);
	mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
	mkdir("/proc", 0755);
	mount("proc", "/proc", "proc", 0, NULL);
	int fd = open("/dev/ttyS0", O_RDWR | O_NOCTTY);
	if (fd >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
	con = 1;
}

int main(void)
{
	console_open();
	uint64_t fill_mib = env_u64("fill", 64), hot_mib = env_u64("hot", 0);
	rate = env_u64("rate", 0);
	const char *order = getenv("order");
	random_order = order && !strcmp(order, "random");
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	nthreads = ncpu < 1 ? 1 : ncpu > MAX_THREADS ? MAX_THREADS : (unsigned)ncpu;
	if (hot_mib > fill_mib)
		hot_mib = fill_mib;
	npages = fill_mib * (1 << 20) / PAGE;
	nhot = hot_mib * (1 << 20) / PAGE;
	if (!nhot)
		nthreads = 0;

	uint64_t t0 = now_ns();
	mem = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	gen = calloc(npages, sizeof(*gen));
	if (mem == MAP_FAILED || !gen) {
		say("DIRTY error cannot map %llu MiB: %s", (unsigned long long)fill_mib,
		    strerror(errno));
		for (;;)
			pause();
	}
	mlockall(MCL_CURRENT | MCL_FUTURE);
	for (uint64_t pg = 0; pg < npages; pg++) {
		gen[pg] = 1;
		flit_pattern_fill((volatile uint64_t *)(mem + pg * PAGE), pg, 1);
	}
	double fill_ms = (double)(now_ns() - t0) / 1e6;
	uint64_t since = now_ns();
	start_writers();
	say("DIRTY ready fill_mib=%llu hot_mib=%llu threads=%u rate=%llu order=%s fill_ms=%.0f",
	    (unsigned long long)fill_mib, (unsigned long long)hot_mib, nthreads,
	    (unsigned long long)rate, random_order ? "random" : "hot", fill_ms);

	char line[256];
	size_t len = 0;
	for (;;) {
		struct pollfd p = {.fd = 0, .events = POLLIN};
		if (poll(&p, 1, -1) <= 0)
			continue;
		char c;
		ssize_t r = read(0, &c, 1);
		if (r <= 0) {
			usleep(100000);
			continue;
		}
		if (c != '\n' && c != '\r') {
			if (len < sizeof(line) - 1)
				line[len++] = c;
			continue;
		}
		line[len] = 0;
		len = 0;
		uint64_t rounds, pages;
		double stall_ms, secs = (double)(now_ns() - since) / 1e9;
		if (!strcmp(line, "stats")) {
			totals(&rounds, &pages, &stall_ms);
			say("DIRTY stats rounds=%llu pages=%llu secs=%.2f rate_pps=%.0f "
			    "stall_ms=%.1f",
			    (unsigned long long)rounds, (unsigned long long)pages, secs,
			    secs > 0 ? (double)pages / secs : 0, stall_ms);
		} else if (!strcmp(line, "verify")) {
			stop_writers();
			totals(&rounds, &pages, &stall_ms);
			uint64_t bad = verify();
			say("DIRTY verify %s pages=%llu bad=%llu stall_ms=%.1f rounds=%llu "
			    "pages_written=%llu secs=%.2f rate_pps=%.0f",
			    bad ? "bad" : "ok", (unsigned long long)npages, (unsigned long long)bad,
			    stall_ms, (unsigned long long)rounds, (unsigned long long)pages, secs,
			    secs > 0 ? (double)pages / secs : 0);
			start_writers();
		}
	}
}
