// SPDX-License-Identifier: MIT
#include "lib.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "migrate/conn.h"
#include "vmm/vm.h"

struct echo {
	struct mig_conn c;
	pthread_t t;
	unsigned n;
};

/* Answers every 16-byte request with a 4 KiB page. */
static void *echo_thread(void *arg)
{
	struct echo *e = arg;
	static uint8_t page[4096];
	uint8_t req[16];

	for (unsigned i = 0; i < e->n; i++) {
		if (read(e->c.fd, req, sizeof(req)) != (ssize_t)sizeof(req))
			break;
		if (write(e->c.fd, page, sizeof(page)) != (ssize_t)sizeof(page))
			break;
	}
	return NULL;
}

int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

double rtt_4k_us(double *p99)
{
	enum { N = 2000 };
	static double t[N];
	struct echo e = {.n = N};
	struct mig_conn c;
	uint16_t port;
	char addr[64];
	uint8_t req[16] = {0}, page[4096];
	int lfd = mig_listen("tcp:127.0.0.1:0", &port);

	snprintf(addr, sizeof(addr), "tcp:127.0.0.1:%u", port);
	mig_connect(addr, 5000, &c);
	mig_accept(lfd, 5000, &e.c);
	pthread_create(&e.t, NULL, echo_thread, &e);
	for (unsigned i = 0; i < N; i++) {
		uint64_t t0 = now_ns();
		size_t got = 0;
		if (write(c.fd, req, sizeof(req)) != (ssize_t)sizeof(req))
			break;
		while (got < sizeof(page)) {
			ssize_t r = read(c.fd, page + got, sizeof(page) - got);
			if (r <= 0)
				break;
			got += (size_t)r;
		}
		t[i] = (double)(now_ns() - t0) / 1e3;
	}
	pthread_join(e.t, NULL);
	mig_conn_close(&c);
	mig_conn_close(&e.c);
	close(lfd);
	qsort(t, N, sizeof(t[0]), cmp_double);
	if (p99)
		*p99 = t[N * 99 / 100];
	return t[N / 2];
}

void bench_args(int argc, char **argv, const char *prog, unsigned flags, struct bench_opts *o)
{
	static const struct option longopts[] = {{"quick", no_argument, NULL, 'q'},
						 {"smoke", no_argument, NULL, 's'},
						 {"out", required_argument, NULL, 'o'},
						 {"json", required_argument, NULL, 'j'},
						 {"ram", required_argument, NULL, 'r'},
						 {"only", required_argument, NULL, 'm'},
						 {"repeat", required_argument, NULL, 'n'},
						 {"workload", required_argument, NULL, 'w'},
						 {"channels", required_argument, NULL, 'c'},
						 {"paused", no_argument, NULL, 'p'},
						 {0}};
	const char *usage = flags & BENCH_FILTER
				? "[--quick|--smoke] [--out FILE] [--json FILE] [--ram SIZE,...] "
				  "[--only MODE] [--repeat N] [--workload idle|hot|random] "
				  "[--channels N] [--paused]"
			    : flags & BENCH_SELECT
				? "[--quick|--smoke] [--out FILE] [--json FILE] [--ram SIZE,...] "
				  "[--only MODE] [--repeat N]"
				: "[--quick|--smoke] [--out FILE] [--json FILE]";
	int c;

	*o = (struct bench_opts){.out = stdout, .repeat = 1};
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		bool select = c == 'r' || c == 'm' || c == 'n';
		bool filter = c == 'w' || c == 'c' || c == 'p';
		if ((select && !(flags & BENCH_SELECT)) || (filter && !(flags & BENCH_FILTER)))
			die("usage: %s %s", prog, usage);
		if (c == 'q') {
			o->quick = true;
		} else if (c == 's') {
			o->smoke = true;
		} else if (c == 'o') {
			if (!(o->out = fopen(optarg, "w")))
				die("%s: %s", optarg, strerror(errno));
		} else if (c == 'j') {
			if (!(o->json = fopen(optarg, "w")))
				die("%s: %s", optarg, strerror(errno));
		} else if (c == 'r') {
			char *list = strdup(optarg), *save = NULL;
			for (char *t = strtok_r(list, ",", &save); t;
			     t = strtok_r(NULL, ",", &save))
				if (o->nram == ARRAY_SIZE(o->ram) ||
				    parse_size(t, &o->ram[o->nram++]) ||
				    o->ram[o->nram - 1] < 64 * MiB)
					die("--ram %s: up to %zu sizes of at least 64M", optarg,
					    ARRAY_SIZE(o->ram));
			free(list);
		} else if (c == 'm') {
			o->only = optarg;
		} else if (c == 'n') {
			char *end;
			unsigned long n = strtoul(optarg, &end, 10);
			if (*end || !n || n > 100)
				die("--repeat %s: 1 to 100", optarg);
			o->repeat = (unsigned)n;
		} else if (c == 'w') {
			if (strcmp(optarg, "idle") && strcmp(optarg, "hot") &&
			    strcmp(optarg, "random"))
				die("--workload %s: one of idle, hot, random", optarg);
			o->workload = optarg;
		} else if (c == 'c') {
			char *end;
			unsigned long n = strtoul(optarg, &end, 10);
			if (*end || !n || n > MIG_MAX_CHANNELS)
				die("--channels %s: 1 to %d", optarg, MIG_MAX_CHANNELS);
			o->channels = (unsigned)n;
		} else if (c == 'p') {
			o->paused = true;
		} else {
			die("usage: %s %s", prog, usage);
		}
	}
}

#define BENCH_TOKEN "benchmark-token-0123456789"

void bench_migrate(const struct bench_case *c, struct bench_result *res)
{
	char args[128], path[4096], addr[64];
	struct vm_config cfg = {.mem_size = c->mem, .nr_vcpus = 2, .dirty_track = c->dirty};
	struct vm *src = NULL;
	struct mig_dest_thread d = {0};
	struct mig_params p;
	struct vm_result vr;
	uint16_t port;
	int r;

	snprintf(args, sizeof(args), "rounds=0 ws=%llu rate=%llu%s", (unsigned long long)c->hot,
		 (unsigned long long)c->rate, c->random ? " order=random" : "");
	snprintf(path, sizeof(path), "%s/guests/memcheck.elf", FLIT_BUILD_DIR);
	if ((r = vm_create(&cfg, &src)) || (r = vm_load_guest(src, path, args)))
		die("source VM: %s", strerror(-r));
	src->serial.sink = NULL;
	vm_start(src);
	if (testdev_wait_progress(&src->testdev, 2, 2, 600000))
		die("the guest did not start");
	if (c->pause_idle && !c->hot && (r = vm_pause(src)))
		die("pausing the guest: %s", strerror(-r));

	int lfd = mig_listen("tcp:127.0.0.1:0", &port);
	mig_dest_params_default(&d.p);
	d.p.listen_fd = lfd;
	d.p.dirty_track = c->dirty;
	d.p.prealloc = c->prealloc;
	d.p.transport = c->rx;
	if (c->prealloc) {
		/* Told the layout, the destination builds its VM and faults in
		 * its RAM before it listens, as `flit --incoming --mem --vcpus`
		 * does; otherwise that happens inside the migration. */
		d.p.mem_size = c->mem;
		d.p.nr_vcpus = 2;
	}
	d.p.token_len = strlen(BENCH_TOKEN);
	memcpy(d.p.token, BENCH_TOKEN, d.p.token_len);
	int ready = 0;
	d.p.ready = &ready;
	mig_dest_spawn(&d);
	/* The destination's RAM is faulted in before the clock starts. */
	for (int i = 0; i < 300000 && !__atomic_load_n(&ready, __ATOMIC_ACQUIRE); i++)
		usleep(1000);
	mig_params_default(&p);
	snprintf(addr, sizeof(addr), "tcp:127.0.0.1:%u", port);
	p.addr = addr;
	p.channels = c->channels;
	p.token_len = strlen(BENCH_TOKEN);
	memcpy(p.token, BENCH_TOKEN, p.token_len);
	p.timeout_ms = 60000;
	p.transport = c->transport;
	p.mode = c->mode;
	p.policy = c->policy;
	if (c->zc)
		setenv("FLIT_TRANSPORT_ZC", c->zc, 1);
	else
		unsetenv("FLIT_TRANSPORT_ZC");
	res->r = mig_source_run(src, &p, &res->rep);
	mig_dest_join(&d);
	close(lfd);
	res->dest_r = d.r;
	res->dest_rep = d.rep;
	res->verified = "no";
	if (!res->r && !d.r) {
		vm_destroy(src);
		src = NULL;
		testdev_command(&d.vm->testdev, -1, FLIT_CMD_VERIFY_EXIT);
		vm_wait(d.vm, 600000, &vr);
		res->verified =
		    !vr.failed && !vr.timed_out && vr.exit_status == 0 ? "yes" : "FAILED";
		vm_destroy(d.vm);
	}
	vm_destroy(src);
	if (res->r || d.r)
		log_err("migration failed: %s / %s", res->rep.error, d.rep.error);
}
