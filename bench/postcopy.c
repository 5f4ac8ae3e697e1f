// SPDX-License-Identifier: MIT
/*
 * flit-bench-postcopy: post-copy and hybrid migrations under each policy,
 * next to pre-copy of the same guests and to the floor a fault cannot beat
 * (one 4 KiB request/response round trip over loopback TCP), all measured
 * in the same run.
 *
 * Guests: the memcheck guest (2 vCPUs) of each RAM size, idle or rewriting
 * a hot set as fast as it can, migrated over loopback inside this process
 * with 2 channels and io_uring; every destination's RAM ready before the
 * clock, and every destination guest verifies all of its memory afterwards
 * (a run that fails that is reported as failed, never as a time).
 *
 * For every case: total time, switchover downtime (source paused ->
 * destination running), time until every page was in, faults, pages
 * pulled by them and sent along with their answers, pages that arrived
 * twice (a fault's answer and the push met; placed once), the fault latency
 * p50/p90/p99/p99.9/max (fault read -> page placed), and the ratios of
 * p50 and p99 to the round trip. The post-copy issue's targets: p50 <= 2 x
 * and p99 <= 5 x the round trip, downtime <= 2 ms.
 *
 * usage: flit-bench-postcopy [--quick|--smoke] [--out FILE] [--json FILE]
 *                            [--ram SIZE,...] [--only POLICY] [--repeat N]
 * CSV on stdout (or FILE). --quick: 1 GiB only; --smoke: 256 MiB, idle and
 * a 16 MiB hot set (seconds: the CI check that it works). --ram: these sizes
 * (default 1, 2 and 4 GiB). --only: these policies, comma-separated
 * (precopy-default, postcopy-default, postcopy-prefetch, hybrid-default,
 * hybrid-recent, postcopy-yield).
 * --repeat: everything N times, interleaved.
 */
#include <stdio.h>
#include <string.h>

#include "bench/lib.h"
#include "common/log.h"
#include "common/util.h"
#include "migrate/policy.h"
#include "transport/transport.h"

static const struct {
	enum mig_mode mode;
	const char *policy;
} runs[] = {
    {MIG_MODE_PRECOPY, "precopy-default"},    {MIG_MODE_POSTCOPY, "postcopy-default"},
    {MIG_MODE_POSTCOPY, "postcopy-prefetch"}, {MIG_MODE_HYBRID, "hybrid-default"},
    {MIG_MODE_HYBRID, "hybrid-recent"},	      {MIG_MODE_POSTCOPY, "postcopy-yield"},
};

/* Is name in the comma-separated list? */
static bool listed(const char *list, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = list; p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
		if (!strncmp(p, name, n) && (p[n] == ',' || !p[n]))
			return true;
	return false;
}

static const uint64_t hot_sets[] = {0, 64 * MiB, 256 * MiB}, smoke_hot_sets[] = {0, 16 * MiB};

static void run_case(FILE *out, FILE *json, uint64_t mem, uint64_t hot, unsigned m, double rtt)
{
	struct bench_case c = {.mem = mem,
			       .hot = hot,
			       .channels = 2,
			       .dirty = "bitmap",
			       .prealloc = true,
			       .mode = runs[m].mode,
			       .policy = mig_policy_by_name(runs[m].policy),
			       .transport = &transport_uring};
	struct bench_result res;

	bench_migrate(&c, &res);
	const struct mig_report *r = &res.rep;
	const uint64_t *l = r->fault_lat_us;
	bool faulted = strcmp(r->mode, "precopy") && r->faults > 0;
	fprintf(out, "migration,%llu,%s,%llu,%s,%s,%s,", (unsigned long long)(mem >> 20),
		hot ? "hot" : "idle", (unsigned long long)(hot >> 20), r->mode, r->policy,
		strcmp(r->status, "completed") ? r->status : "ok");
	fprintf(out, "%.1f,%.2f,%.1f,%llu,%llu,%llu,%llu,", r->total_ms, r->downtime_ms,
		r->postcopy_ms, (unsigned long long)r->faults, (unsigned long long)r->pages_pulled,
		(unsigned long long)r->pages_prefetched, (unsigned long long)r->pages_twice);
	for (int q = 0; q < 5; q++)
		fprintf(out, "%llu,", (unsigned long long)l[q]);
	fprintf(out, "%.0f,%.2f,%.2f,%.1f,%llu,%s\n", rtt, faulted ? (double)l[0] / rtt : 0,
		faulted ? (double)l[2] / rtt : 0, r->guest_stall_ms, (unsigned long long)r->bytes,
		res.verified);
	fflush(out);
	if (json)
		mig_report_json(r, json);
}

int main(int argc, char **argv)
{
	struct bench_opts o;
	double rtt99, rtt = 0;

	log_set_prefix("flit-bench-postcopy");
	log_init_from_env();
	bench_args(argc, argv, "flit-bench-postcopy", BENCH_SELECT, &o);
	for (const char *p = o.only; p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL) {
		char name[64];
		snprintf(name, sizeof(name), "%.*s", (int)strcspn(p, ","), p);
		if (!mig_policy_by_name(name))
			die("--only %s: policies, comma-separated, of %s", o.only,
			    mig_policy_names());
	}
	uint64_t sizes[8] = {1 * GiB, 2 * GiB, 4 * GiB};
	unsigned nsz = o.quick ? 1 : 3;
	const uint64_t *hot = o.smoke ? smoke_hot_sets : hot_sets;
	unsigned nhot = o.smoke ? ARRAY_SIZE(smoke_hot_sets) : ARRAY_SIZE(hot_sets);
	if (o.smoke) {
		sizes[0] = 256 * MiB;
		nsz = 1;
	}
	if (o.nram) {
		memcpy(sizes, o.ram, sizeof(o.ram));
		nsz = o.nram;
	}
	FILE *out = o.out;
	fprintf(out, "kind,ram_mib,workload,hot_mib,mode,policy,status,total_ms,downtime_ms,"
		     "postcopy_ms,faults,pages_pulled,pages_prefetched,pages_twice,fault_p50_us,"
		     "fault_p90_us,"
		     "fault_p99_us,fault_p999_us,fault_max_us,rtt_4k_us,p50_vs_rtt,p99_vs_rtt,"
		     "guest_stall_ms,bytes,verified\n");
	rtt = rtt_4k_us(&rtt99);
	fprintf(out, "limit_rtt_4k,,,,,,,,,,,,,,%.0f,,%.0f,,,%.0f,,,,,\n", rtt, rtt99, rtt);
	fflush(out);
	for (unsigned k = 0; k < o.repeat; k++)
		for (unsigned i = 0; i < nsz; i++)
			for (unsigned w = 0; w < nhot; w++)
				for (unsigned m = 0; m < ARRAY_SIZE(runs); m++)
					if (!o.only || listed(o.only, runs[m].policy))
						run_case(out, o.json, sizes[i], hot[w], m, rtt);
	if (out != stdout)
		fclose(out);
	if (o.json)
		fclose(o.json);
	return 0;
}
