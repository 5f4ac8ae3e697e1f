// SPDX-License-Identifier: MIT
/*
 * flit-bench-precopy: pre-copy migrations next to the machine's limits,
 * measured in the same run.
 *
 * Limits: memcpy bandwidth, and loopback TCP throughput with 1 and N
 * connections (the same socket settings and 1 MiB sends and receives as the
 * migration's records), two ways: through a buffer that stays in the cache
 * (limit_tcp, the network alone; ratio_to_tcp), and RAM to RAM (limit_tcp_ram:
 * each end goes once through memory of its own, huge pages as guest RAM,
 * as a migration reads guest RAM and writes the destination's). The RAM
 * limit is measured again just before each migration (this machine's
 * speed drifts), which the row's tcp_ram_limit_mb_per_s and
 * ratio_to_tcp_ram give.
 * Migrations: the memcheck guest (2 vCPUs) of each RAM size, idle,
 * rewriting a hot set, or (the full run) writing pages at random over all
 * of its RAM ("random", 256 MiB a round), migrated over loopback inside this process (source
 * and destination share the machine's cores, as two processes would), each
 * case once per transport: plain blocking sends (sync), io_uring with its
 * own zero-copy choice (uring), and io_uring forced to zero-copy sends
 * (uring-zc, where the kernel has them), each received through io_uring
 * (the destination's default) but sync's, received with plain reads, and
 * io_uring sending to plain reads (uring/rx-sync); and with io_uring, the idle and hot
 * guests again in post-copy and hybrid mode, next to one 4 KiB request's
 * round trip over loopback TCP (the floor for a post-copy fault). Each
 * destination guest then verifies all of its memory; a run that fails that
 * is reported as failed, never as a time.
 *
 * usage: flit-bench-precopy [--quick|--smoke] [--out FILE] [--json FILE]
 *                           [--ram SIZE,...] [--only TRANSPORT] [--repeat N]
 *                           [--workload idle|hot|random] [--channels N] [--paused]
 * CSV on stdout (or FILE); one row per limit and per migration. --json:
 * every migration's report, one JSON object a line. --quick: 1 GiB only;
 * --smoke: one 256 MiB idle case per transport, the guest paused as QEMU's
 * reference guest is (seconds; for CI and the lab's like-for-like run).
 * --ram: these sizes; --only: one transport variant (sync, uring,
 * uring-zc, uring/rx-sync); --repeat: the whole matrix N times;
 * --workload, --channels: only the cases of that workload or channel count
 * (every mode); --paused: idle guests paused, as with --smoke. Without
 * --paused, the idle pre-copy cases with io_uring run once more with the
 * guest paused, as QEMU's idle reference guest is (column guest).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench/lib.h"
#include "common/log.h"
#include "common/util.h"
#include "migrate/conn.h"
#include "migrate/migrate.h"
#include "transport/transport.h"
#include "vmm/vm.h"

#define CHUNK (1024 * 1024) /* what one send or receive moves, as a record of pages */

static FILE *out, *json_out;

static double memcpy_gbps(void)
{
	size_t n = 512 * MiB;
	uint8_t *a = malloc(n), *b = malloc(n);
	memset(a, 1, n);
	memset(b, 2, n);
	uint64_t t0 = now_ns();
	for (int i = 0; i < 4; i++) {
		memcpy(i % 2 ? a : b, i % 2 ? b : a, n);
		__asm__ volatile("" : : "r"(a), "r"(b) : "memory"); /* keep the copies */
	}
	double s = (double)(now_ns() - t0) / 1e9;
	volatile uint8_t keep = a[n / 2] ^ b[n / 3];
	(void)keep;
	free(a);
	free(b);
	return 4.0 * (double)n / s / 1e9;
}

/* One end of a TCP limit measurement: bytes to send, or bytes received,
 * from or into buf (len bytes, gone through again and again). */
struct flow {
	struct mig_conn c;
	pthread_t t;
	uint64_t bytes;
	uint8_t *buf;
	size_t len;
};

static void *sink_thread(void *arg)
{
	struct flow *s = arg;
	ssize_t r;
	for (size_t at = 0;
	     (r = recv(s->c.fd, s->buf + at, MIN(CHUNK, s->len - at), MSG_WAITALL)) > 0;) {
		s->bytes += (uint64_t)r;
		at = (at + (size_t)r) % s->len;
	}
	return NULL;
}

static void *source_thread(void *arg)
{
	struct flow *s = arg;
	for (uint64_t sent = 0; sent < s->bytes;) {
		size_t at = sent % s->len;
		ssize_t w = send(s->c.fd, s->buf + at, MIN(CHUNK, s->len - at), MSG_NOSIGNAL);
		if (w <= 0)
			break;
		sent += (uint64_t)w;
	}
	shutdown(s->c.fd, SHUT_WR);
	return NULL;
}

/* The limit measurements' memory, as guest RAM is (transparent huge pages
 * where the host allows): a sending and a receiving half, each at least
 * len bytes, every byte written once when it is mapped and reused after:
 * a measurement before each migration then costs no first touch. */
static uint8_t *ram_pool(size_t len, int half)
{
	static uint8_t *pool[2];
	static size_t pool_len;

	if (len > pool_len) {
		for (int h = 0; h < 2; h++) {
			if (pool[h])
				munmap(pool[h], pool_len);
			void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (p == MAP_FAILED)
				die("tcp limit: mapping %zu bytes: %s", len, strerror(errno));
			madvise(p, len, MADV_HUGEPAGE);
			memset(p, 7 - h, len);
			pool[h] = p;
		}
		pool_len = len;
	}
	return pool[half];
}

/* Loopback TCP, n connections, total bytes; GB/s. ram: each end of each
 * connection sends from or receives into memory of its own that it goes
 * through once (total / n bytes, touched before), as a migration
 * reads guest RAM and writes the destination's; otherwise a 1 MiB buffer
 * that stays in the cache (the network's limit alone). Whole 1 MiB sends and
 * receives, as the migration's records of pages. */
static double tcp_gbps(unsigned n, uint64_t total, bool ram)
{
	struct flow sk[MIG_MAX_CHANNELS], sr[MIG_MAX_CHANNELS];
	uint16_t port;
	char addr[64];
	int lfd = mig_listen("tcp:127.0.0.1:0", &port);
	size_t len = ram ? (size_t)(total / n) : CHUNK;

	snprintf(addr, sizeof(addr), "tcp:127.0.0.1:%u", port);
	for (unsigned i = 0; i < n; i++) {
		mig_connect(addr, 5000, &sr[i].c);
		mig_accept(lfd, 5000, &sk[i].c);
		sk[i].bytes = 0;
		sr[i].bytes = total / n;
		sk[i].len = sr[i].len = len;
		sr[i].buf = ram_pool(len * n, 0) + i * len;
		sk[i].buf = ram_pool(len * n, 1) + i * len;
	}
	uint64_t t0 = now_ns();
	for (unsigned i = 0; i < n; i++) {
		pthread_create(&sk[i].t, NULL, sink_thread, &sk[i]);
		pthread_create(&sr[i].t, NULL, source_thread, &sr[i]);
	}
	uint64_t got = 0;
	for (unsigned i = 0; i < n; i++) {
		pthread_join(sr[i].t, NULL);
		pthread_join(sk[i].t, NULL);
		got += sk[i].bytes;
		mig_conn_close(&sr[i].c);
		mig_conn_close(&sk[i].c);
	}
	close(lfd);
	return (double)got / ((double)(now_ns() - t0) / 1e9) / 1e9;
}

/* How the data channels send: a transport and, for io_uring, whether its
 * zero-copy choice is forced (FLIT_TRANSPORT_ZC); and how the destination
 * receives (NULL: its default, io_uring). */
struct tx_variant {
	const char *name;
	const struct transport_ops *ops;
	const char *zc; /* NULL: the transport decides */
	const struct transport_ops *rx;
};

static const struct tx_variant variants[] = {
    {"sync", &transport_sync, NULL, &transport_sync},
    {"uring", &transport_uring, NULL, NULL},
    {"uring-zc", &transport_uring, "1", NULL},
    {"uring/rx-sync", &transport_uring, NULL, &transport_sync},
};
#define NR_VARIANTS (sizeof(variants) / sizeof(variants[0]))

/* hot: working set rewritten (0: idle); rate: pages per second per vCPU it
 * is rewritten at (0: as fast as the guest can). */
/* --smoke: the idle guest is paused before the migration, as QEMU's
 * reference guest is (it never runs): the same work on both sides, which
 * matters most in the lab, where a running guest's every wake-up takes
 * the one emulated CPU from the migration. */
static bool pause_idle;
/* The "hot" pages of the next case are random writes over all of RAM
 * (memcheck order=random): workload "random". */
static bool random_order;
/* The cases --workload, --channels and --paused choose. */
static struct bench_opts want;
/* Loopback TCP over n connections, GB/s, through the cache. */
static double tcp_cache[MIG_MAX_CHANNELS + 1];

static void migrate_one(uint64_t mem, uint64_t hot, uint64_t rate, unsigned channels,
			const char *dirty, bool prealloc, const struct tx_variant *tx,
			enum mig_mode mode)
{
	struct bench_case c = {.mem = mem,
			       .hot = hot,
			       .rate = rate,
			       .channels = channels,
			       .dirty = dirty,
			       .prealloc = prealloc,
			       .pause_idle = pause_idle,
			       .random = random_order,
			       .mode = mode,
			       .transport = tx->ops,
			       .zc = tx->zc,
			       .rx = tx->rx};
	struct bench_result res;
	const char *workload = !hot ? "idle" : random_order ? "random" : "hot";

	if ((want.workload && strcmp(want.workload, workload)) ||
	    (want.channels && want.channels != channels))
		return;
	c.pause_idle = c.pause_idle || want.paused;
	/* The RAM-to-RAM limit again just before: this machine's speed drifts
	 * (other tenants), and the ratio is to what it could do then. */
	double ram_limit = tcp_gbps(channels, MIN(mem, GiB), true);
	bench_migrate(&c, &res);
	const struct mig_report rep = res.rep;
	const char *verified = res.verified;
	double mbps = rep.total_ms > 0 ? (double)rep.bytes / 1e3 / rep.total_ms : 0;
	/* least possible: every non-zero page once, plus what was dirtied */
	uint64_t need = (rep.pages_sent - rep.pages_resent) * 4096 +
			(uint64_t)(rep.dirty_rate_pps * rep.total_ms / 1e3) * 4096;
	fprintf(
	    out,
	    "migration,%llu,%s,%u,%s,%s,%.1f,%.2f,%u,%llu,%llu,%llu,%llu,%.0f,%.0f,%.2f,%.2f,%u,"
	    "%s,%s,%s,%s,%llu,%s,%.1f,%llu,%llu,%llu,%.0f,%.2f,%s\n",
	    (unsigned long long)(mem >> 20), workload, (unsigned)(hot >> 20), dirty,
	    strcmp(rep.status, "completed") ? rep.status : "ok", rep.total_ms, rep.downtime_ms,
	    rep.rounds, (unsigned long long)rep.bytes, (unsigned long long)rep.pages_sent,
	    (unsigned long long)rep.pages_resent, (unsigned long long)rep.zero_pages, mbps,
	    tcp_cache[channels] * 1e3,
	    tcp_cache[channels] > 0 ? mbps / (tcp_cache[channels] * 1e3) : 0,
	    need ? (double)rep.bytes / (double)need : 0, channels, verified,
	    prealloc ? "yes" : "no", tx->name, rep.send_mode, (unsigned long long)rate, rep.mode,
	    rep.postcopy_ms, (unsigned long long)rep.faults,
	    (unsigned long long)rep.fault_lat_us[0], (unsigned long long)rep.fault_lat_us[2],
	    ram_limit * 1e3, ram_limit > 0 ? mbps / (ram_limit * 1e3) : 0,
	    c.pause_idle && !hot ? "paused" : "running");
	fflush(out);
	if (json_out)
		mig_report_json(&rep, json_out);
}

int main(int argc, char **argv)
{
	struct bench_opts o;

	log_set_prefix("flit-bench-precopy");
	log_init_from_env();
	bench_args(argc, argv, "flit-bench-precopy", BENCH_SELECT | BENCH_FILTER, &o);
	want = o;
	bool known = !o.only;
	for (unsigned v = 0; v < NR_VARIANTS && !known; v++)
		known = !strcmp(o.only, variants[v].name);
	if (!known)
		die("--only %s: one of sync, uring, uring-zc, uring/rx-sync", o.only);
	bool quick = o.quick, smoke = o.smoke;
	out = o.out;
	json_out = o.json;
	uint64_t tcp_bytes = smoke ? 256 * MiB : 4 * GiB;
	double mc = memcpy_gbps();
	static const unsigned nconn[] = {1, 2, 4};
	double tcp_ram[ARRAY_SIZE(nconn)];
	for (unsigned i = 0; i < ARRAY_SIZE(nconn); i++) {
		tcp_cache[nconn[i]] = tcp_gbps(nconn[i], tcp_bytes, false);
		tcp_ram[i] = tcp_gbps(nconn[i], MIN(tcp_bytes, GiB), true);
	}
	fprintf(out,
		"kind,ram_mib,workload,hot_mib,dirty_track,status,total_ms,downtime_ms,rounds,"
		"bytes,pages_sent,pages_resent,zero_pages,mb_per_s,tcp_limit_mb_per_s,"
		"ratio_to_tcp,bytes_vs_needed,channels,verified,dest_prealloc,transport,send_mode,"
		"rate_pps,mode,postcopy_ms,faults,fault_p50_us,fault_p99_us,tcp_ram_limit_mb_per_s,"
		"ratio_to_tcp_ram,guest\n");
	fprintf(out, "limit_memcpy,,,,,,,,,,,,,%.0f,,,,1,,\n", mc * 1e3);
	/* limit_tcp: through the cache; limit_tcp_ram: RAM to RAM. */
	for (unsigned i = 0; i < ARRAY_SIZE(nconn); i++)
		fprintf(
		    out,
		    "limit_tcp,,,,,,,,,,,,,%.0f,,,,%u,,\nlimit_tcp_ram,,,,,,,,,,,,,%.0f,,,,%u,,\n",
		    tcp_cache[nconn[i]] * 1e3, nconn[i], tcp_ram[i] * 1e3, nconn[i]);
	/* The floor for a post-copy fault, in the fault_p50_us column. */
	fprintf(out, "limit_rtt_4k,,,,,,,,,,,,,,,,,1,,,,,,,,,,%.0f,\n", rtt_4k_us(NULL));
	uint64_t sizes_q[] = {1 * GiB}, sizes[] = {1 * GiB, 2 * GiB, 4 * GiB};
	uint64_t *sz = quick ? sizes_q : sizes;
	unsigned nsz = quick ? 1 : 3;
	if (o.nram) {
		sz = o.ram;
		nsz = o.nram;
	}
	/* Each case with every transport, one after the other. */
	pause_idle = smoke;
	for (unsigned v = 0; smoke && v < NR_VARIANTS; v++)
		if (!o.only || !strcmp(o.only, variants[v].name))
			migrate_one(256 * MiB, 0, 0, 2, "bitmap", true, &variants[v],
				    MIG_MODE_PRECOPY);
	for (unsigned k = 0; k < o.repeat; k++)
		for (unsigned i = 0; !smoke && i < nsz; i++) {
			for (unsigned v = 0; v < NR_VARIANTS; v++) {
				if (o.only && strcmp(o.only, variants[v].name))
					continue;
				migrate_one(sz[i], 0, 0, 1, "bitmap", true, &variants[v],
					    MIG_MODE_PRECOPY);
				migrate_one(sz[i], 0, 0, 2, "bitmap", true, &variants[v],
					    MIG_MODE_PRECOPY);
				migrate_one(sz[i], 0, 0, 4, "bitmap", true, &variants[v],
					    MIG_MODE_PRECOPY);
				/* QEMU's idle reference guest never runs: the same
				 * cases with this guest paused, for the comparison
				 * (io_uring only). */
				for (unsigned ch = 1; v == 1 && !want.paused && ch <= 4; ch *= 2) {
					pause_idle = true;
					migrate_one(sz[i], 0, 0, ch, "bitmap", true, &variants[v],
						    MIG_MODE_PRECOPY);
					if (ch == 2 && !quick)
						migrate_one(sz[i], 0, 0, ch, "bitmap", false,
							    &variants[v], MIG_MODE_PRECOPY);
					pause_idle = false;
				}
				migrate_one(sz[i], quick ? 64 * MiB : 256 * MiB, 0, 2, "bitmap",
					    true, &variants[v], MIG_MODE_PRECOPY);
				if (v == 1) {
					/* The same guests switched at once, and after
					 * rounds (io_uring only). */
					for (int m = MIG_MODE_POSTCOPY; m <= MIG_MODE_HYBRID; m++) {
						migrate_one(sz[i], 0, 0, 2, "bitmap", true,
							    &variants[v], (enum mig_mode)m);
						migrate_one(sz[i], quick ? 64 * MiB : 256 * MiB, 0,
							    2, "bitmap", true, &variants[v],
							    (enum mig_mode)m);
					}
					/* The other hot set QEMU's busy cases use (1 GiB:
					 * 64 and 256 MiB), pre-copy and post-copy. */
					for (int m = MIG_MODE_PRECOPY;
					     sz[i] == GiB && m <= MIG_MODE_POSTCOPY; m++)
						migrate_one(sz[i], quick ? 256 * MiB : 64 * MiB, 0,
							    2, "bitmap", true, &variants[v],
							    (enum mig_mode)m);
				}
				if (quick)
					continue;
				migrate_one(sz[i], 0, 0, 2, "bitmap", false, &variants[v],
					    MIG_MODE_PRECOPY);
				migrate_one(sz[i], 256 * MiB, 0, 2, "ring", true, &variants[v],
					    MIG_MODE_PRECOPY);
				/* The hot set at bounded dirty rates (per vCPU, 2 vCPUs). */
				migrate_one(sz[i], 256 * MiB, 20000, 2, "bitmap", true,
					    &variants[v], MIG_MODE_PRECOPY);
				/* Random writes: 256 MiB a round, anywhere in RAM. */
				random_order = true;
				migrate_one(sz[i], 256 * MiB, 0, 2, "bitmap", true, &variants[v],
					    MIG_MODE_PRECOPY);
				random_order = false;
				migrate_one(sz[i], 256 * MiB, 100000, 2, "bitmap", true,
					    &variants[v], MIG_MODE_PRECOPY);
			}
		}
	if (out != stdout)
		fclose(out);
	if (json_out)
		fclose(json_out);
	return 0;
}
