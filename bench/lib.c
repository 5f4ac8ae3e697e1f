// SPDX-License-Identifier: MIT
#include "lib.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include <string.h>
#include "migrate/conn.h"

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

void bench_args(int argc, char **argv, const char *prog, bool *quick, bool *smoke, FILE **out,
		FILE **json)
{
	static const struct option longopts[] = {{"quick", no_argument, NULL, 'q'},
						 {"smoke", no_argument, NULL, 's'},
						 {"out", required_argument, NULL, 'o'},
						 {"json", required_argument, NULL, 'j'},
						 {0}};
	int c;

	*quick = *smoke = false;
	*out = stdout;
	*json = NULL;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (c == 'q')
			*quick = true;
		else if (c == 's')
			*smoke = true;
		else if (c == 'o' && !(*out = fopen(optarg, "w")))
			die("%s: %s", optarg, strerror(errno));
		else if (c == 'j' && !(*json = fopen(optarg, "w")))
			die("%s: %s", optarg, strerror(errno));
		else if (c != 'o' && c != 'j')
			die("usage: %s [--quick|--smoke] [--out FILE] [--json FILE]", prog);
	}
}
