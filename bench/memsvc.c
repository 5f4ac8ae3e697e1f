// SPDX-License-Identifier: MIT
/*
 * flit-bench-memsvc: migration through memsvc next to pre-copy and
 * post-copy, for guests of growing RAM with the same hot set, in one run.
 *
 * Every guest is memcheck on 2 vCPUs rewriting a 64 MiB hot set (all of
 * its RAM filled with patterns first). The memsvc cases keep the guest's
 * RAM in a flit-memsvc process started here, with a 256 MiB cache on both
 * sides, and move either the cache itself to the destination ("memsvc":
 * pre-copy rounds over what is resident) or write it back to memsvc
 * ("memsvc-writeback": the state, the first MiB and a hot list travel).
 * Either way what moves is bounded by the cache, so their time should not
 * grow with RAM. Pre-copy and post-copy move anonymous RAM as usual
 * (destination preallocated). Each destination guest verifies all of its
 * memory; a run that fails that is reported as failed, never as a time.
 * Next to them: the remote fault latency (fault to page placed, at the
 * memsvc destination) and the raw round trips it stands on (a 1-page
 * memsvc read, a 4 KiB TCP request).
 *
 * usage: flit-bench-memsvc [--quick|--smoke] [--out FILE] [--json FILE]
 *                          [--ram SIZE,...] [--only MODE] [--repeat N]
 * CSV on stdout (or FILE). Sizes: 1, 2, 4, 8 GiB; --quick 1 and 2 GiB;
 * --smoke 256 and 512 MiB with a 16 MiB hot set and a 64 MiB cache;
 * --ram these instead. --only: one mode (memsvc, memsvc-writeback,
 * precopy, postcopy). --repeat: every size and mode N times, interleaved.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/lib.h"
#include "common/log.h"
#include "common/util.h"
#include "memsvc/client.h"
#include "migrate/conn.h"
#include "migrate/migrate.h"
#include "vmm/remote.h"
#include "vmm/vm.h"

#define TOKEN "benchmark-token-0123456789"

static FILE *out, *json_out;
static uint64_t hot_bytes = 64 * MiB, cache_bytes = 256 * MiB;

/* flit-memsvc on a free loopback port. */
static pid_t svc_pid;
static uint16_t svc_port;

static void svc_start(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	char listen[64], path[4096];

	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) ||
	    getsockname(fd, (struct sockaddr *)&a, &len))
		die("a free port: %s", strerror(errno));
	close(fd);
	svc_port = ntohs(a.sin_port);
	snprintf(listen, sizeof(listen), "127.0.0.1:%u", svc_port);
	snprintf(path, sizeof(path), "%s/flit-memsvc", FLIT_BUILD_DIR);
	svc_pid = fork();
	if (svc_pid == 0) {
		int null = open("/dev/null", O_WRONLY);
		dup2(null, 2);
		execl(path, path, "--listen", listen, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 200; i++) {
		int err;
		char why[160];
		struct memsvc_client *c =
		    memsvc_connect("127.0.0.1", svc_port, 1000, &err, why, sizeof(why));
		if (c) {
			memsvc_close(c);
			return;
		}
		usleep(20000);
	}
	die("flit-memsvc did not start");
}

static void svc_stop(void)
{
	kill(svc_pid, SIGTERM);
	waitpid(svc_pid, NULL, 0);
}

/* Median and p99 of 2000 one-page reads from memsvc, in µs. */
static void memsvc_rtt(double *p50, double *p99)
{
	enum { N = 2000 };
	static double t[N];
	static uint8_t page[4096];
	int err;
	char why[160];
	uint64_t epoch = 0, g = 5;
	const void *src = page;
	struct memsvc_client *c = memsvc_connect("127.0.0.1", svc_port, 0, &err, why, sizeof(why));

	if (!c || memsvc_create(c, "rtt", "rtt-token", 16, 0) ||
	    memsvc_open(c, "rtt", "rtt-token", &epoch, NULL) || memsvc_write(c, &g, 1, &src))
		die("memsvc round trip: %s", c ? memsvc_why(c) : why);
	for (unsigned i = 0; i < N; i++) {
		uint64_t t0 = now_ns();
		if (memsvc_read(c, &g, 1, page, NULL))
			die("memsvc read: %s", memsvc_why(c));
		t[i] = (double)(now_ns() - t0) / 1e3;
	}
	memsvc_close(c);
	qsort(t, N, sizeof(t[0]), cmp_double);
	*p50 = t[N / 2];
	*p99 = t[N * 99 / 100];
}

static struct vm *start_guest(uint64_t mem)
{
	char args[128], path[4096];
	struct vm_config cfg = {.mem_size = mem, .nr_vcpus = 2, .dirty_track = "bitmap"};
	struct vm *vm = NULL;
	int r;

	snprintf(args, sizeof(args), "rounds=0 ws=%llu", (unsigned long long)hot_bytes);
	snprintf(path, sizeof(path), "%s/guests/memcheck.elf", FLIT_BUILD_DIR);
	if ((r = vm_create(&cfg, &vm)) || (r = vm_load_guest(vm, path, args)))
		die("source VM: %s", strerror(-r));
	vm->serial.sink = NULL;
	return vm;
}

static struct remote_mem *attach(struct vm *vm, const char *ns)
{
	char url[128];
	struct remote_mem *rm;
	struct remote_params p = {.url = url,
				  .token = (const uint8_t *)TOKEN,
				  .token_len = strlen(TOKEN),
				  .cache_bytes = cache_bytes};

	snprintf(url, sizeof(url), "memsvc://127.0.0.1:%u/%s", svc_port, ns);
	if (remote_open(&rm, vm, &p))
		die("attaching %s", url);
	return rm;
}

static void migrate(uint64_t mem, enum mig_mode mode, enum mig_memsvc_cache how)
{
	struct mig_dest_thread d = {0};
	struct remote_mem *rm = NULL, *drm = NULL;
	struct mig_params p;
	struct mig_report rep;
	struct vm_result res;
	char addr[64], ns[64];
	uint16_t port;
	int r;

	struct vm *src = start_guest(mem);
	if (mode == MIG_MODE_MEMSVC) {
		snprintf(ns, sizeof(ns), "bench-%llu-%s", (unsigned long long)(mem >> 20),
			 mig_memsvc_cache_name(how));
		rm = attach(src, ns);
	}
	vm_start(src);
	/* Past the fill of all of RAM and a few rounds over the hot set. */
	if (testdev_wait_progress(&src->testdev, 2, 3, 1800000))
		die("the guest did not start");

	int lfd = mig_listen("tcp:127.0.0.1:0", &port);
	mig_dest_params_default(&d.p);
	d.p.listen_fd = lfd;
	d.p.token_len = strlen(TOKEN);
	memcpy(d.p.token, TOKEN, d.p.token_len);
	d.p.cache_bytes = cache_bytes;
	d.p.remote_out = &drm;
	/* Every destination is built before the clock starts, as one started
	 * ahead with --mem and --vcpus is (KVM's per-page tables for a large
	 * memory slot take tens of milliseconds to set up); only RAM that is
	 * not in memsvc is faulted in ahead too. */
	d.p.mem_size = mem;
	d.p.nr_vcpus = 2;
	d.p.prealloc = mode != MIG_MODE_MEMSVC;
	int ready = 0;
	d.p.ready = &ready;
	mig_dest_spawn(&d);
	for (int i = 0; i < 600000 && !__atomic_load_n(&ready, __ATOMIC_ACQUIRE); i++)
		usleep(1000);
	mig_params_default(&p);
	snprintf(addr, sizeof(addr), "tcp:127.0.0.1:%u", port);
	p.addr = addr;
	p.token_len = strlen(TOKEN);
	memcpy(p.token, TOKEN, p.token_len);
	p.timeout_ms = 60000;
	p.mode = mode;
	p.memsvc_cache = how;
	p.remote = rm;
	r = mig_source_run(src, &p, &rep);
	mig_dest_join(&d);
	close(lfd);
	const char *verified = "no";
	struct pager_stats ps = {0};
	if (!r && !d.r) {
		vm_pause(src);
		remote_close(rm);
		rm = NULL;
		vm_destroy(src);
		src = NULL;
		testdev_command(&d.vm->testdev, -1, FLIT_CMD_VERIFY_EXIT);
		vm_wait(d.vm, 1800000, &res);
		verified = !res.failed && !res.timed_out && res.exit_status == 0 ? "yes" : "FAILED";
		vm_pause(d.vm);
		if (drm) {
			remote_stats(drm, &ps);
			remote_close(drm);
		}
		vm_destroy(d.vm);
	}
	if (src) {
		vm_pause(src);
		remote_close(rm);
		vm_destroy(src);
	}
	uint64_t lat50 = mode == MIG_MODE_MEMSVC ? ps.fetch_p50_us : rep.fault_lat_us[0];
	uint64_t lat99 = mode == MIG_MODE_MEMSVC ? ps.fetch_p99_us : rep.fault_lat_us[2];
	fprintf(
	    out, "migration,%s,%llu,%llu,%llu,%s,%.1f,%.2f,%u,%llu,%llu,%llu,%llu,%llu,%llu,%s\n",
	    mode == MIG_MODE_MEMSVC && how == MIG_MEMSVC_WRITEBACK ? "memsvc-writeback" : rep.mode,
	    (unsigned long long)(mem >> 20), (unsigned long long)(hot_bytes >> 20),
	    mode == MIG_MODE_MEMSVC ? (unsigned long long)(cache_bytes >> 20) : 0ULL,
	    strcmp(rep.status, "completed") ? rep.status : "ok", rep.total_ms, rep.downtime_ms,
	    rep.rounds, (unsigned long long)rep.bytes,
	    (unsigned long long)(rep.pages_sent + rep.zero_pages),
	    (unsigned long long)rep.written_back, (unsigned long long)rep.hot_pages,
	    (unsigned long long)lat50, (unsigned long long)lat99, verified);
	fflush(out);
	if (json_out)
		mig_report_json(&rep, json_out);
	if (r || d.r)
		log_err("migration failed: %s / %s", rep.error, d.rep.error);
}

static const struct {
	const char *name; /* the CSV's mode column, and --only's word */
	enum mig_mode mode;
	enum mig_memsvc_cache how;
} cases[] = {
    {"memsvc", MIG_MODE_MEMSVC, MIG_MEMSVC_SEND},
    {"memsvc-writeback", MIG_MODE_MEMSVC, MIG_MEMSVC_WRITEBACK},
    {"precopy", MIG_MODE_PRECOPY, 0},
    {"postcopy", MIG_MODE_POSTCOPY, 0},
};

int main(int argc, char **argv)
{
	struct bench_opts o;

	log_set_prefix("flit-bench-memsvc");
	log_init_from_env();
	bench_args(argc, argv, "flit-bench-memsvc", BENCH_SELECT, &o);
	bool quick = o.quick, smoke = o.smoke;
	out = o.out;
	json_out = o.json;
	if (smoke) {
		hot_bytes = 16 * MiB;
		cache_bytes = 64 * MiB;
	}
	fprintf(out, "kind,mode,ram_mib,hot_mib,cache_mib,status,total_ms,downtime_ms,rounds,"
		     "bytes,pages_on_wire,pages_written_back,hot_pages,fault_p50_us,fault_p99_us,"
		     "verified\n");
	double t50, t99, m50, m99;
	t50 = rtt_4k_us(&t99);
	svc_start();
	memsvc_rtt(&m50, &m99);
	svc_stop();
	/* The floors for a remote fault, in the latency columns. */
	fprintf(out, "limit_rtt_4k_tcp,,,,,,,,,,,,,%.0f,%.0f,\n", t50, t99);
	fprintf(out, "limit_rtt_memsvc_read,,,,,,,,,,,,,%.0f,%.0f,\n", m50, m99);
	uint64_t full[] = {1 * GiB, 2 * GiB, 4 * GiB, 8 * GiB}, q[] = {1 * GiB, 2 * GiB},
		 s[] = {256 * MiB, 512 * MiB};
	const uint64_t *sz = o.nram ? o.ram : smoke ? s : quick ? q : full;
	unsigned n = o.nram ? o.nram : smoke || quick ? 2 : 4;
	/* The sizes one after the other, repeat times over: a noisy spell of
	 * the machine then hits one run of each size, not every run of one. */
	for (unsigned rep = 0; rep < o.repeat; rep++) {
		for (unsigned i = 0; i < n; i++) {
			for (unsigned m = 0; m < ARRAY_SIZE(cases); m++) {
				if (o.only && strcmp(o.only, cases[m].name))
					continue;
				/* a fresh service per run: its memory goes with it */
				if (cases[m].mode == MIG_MODE_MEMSVC)
					svc_start();
				migrate(sz[i], cases[m].mode, cases[m].how);
				if (cases[m].mode == MIG_MODE_MEMSVC)
					svc_stop();
			}
		}
	}
	if (out != stdout)
		fclose(out);
	if (json_out)
		fclose(json_out);
	return 0;
}
