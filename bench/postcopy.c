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
 * pulled by them and sent along with their answers, the fault latency
 * p50/p90/p99/p99.9/max (fault read -> page placed), and the ratios of
 * p50 and p99 to the round trip. The post-copy issue's targets: p50 <= 2 x
 * and p99 <= 5 x the round trip, downtime <= 2 ms.
 *
 * usage: flit-bench-postcopy [--quick] [--out FILE] [--json FILE]
 *                            [--ram SIZE,...] [--only POLICY] [--repeat N]
 * CSV on stdout (or FILE). --quick: 1 GiB only. --ram: these sizes
 * (default 1, 2 and 4 GiB). --only: one policy (precopy-default,
 * postcopy-default, postcopy-prefetch, hybrid-default, hybrid-recent).
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
    {MIG_MODE_HYBRID, "hybrid-recent"},
};

static const uint64_t hot_sets[] = {0, 64 * MiB, 256 * MiB};

int main(int argc, char **argv)
{
	struct bench_opts o;
	double rtt99, rtt = 0;

	log_set_prefix("flit-bench-postcopy");
	log_init_from_env();
	bench_args(argc, argv, "flit-bench-postcopy", BENCH_SELECT, &o);
	if (o.only && !mig_policy_by_name(o.only))
		die("--only %s: one of %s", o.only, mig_policy_names());
	uint64_t sizes[8] = {1 * GiB, 2 * GiB, 4 * GiB};
	unsigned nsz = o.quick ? 1 : 3;
	if (o.nram) {
		memcpy(sizes, o.ram, sizeof(o.ram));
		nsz = o.nram;
	}
	FILE *out = o.out;
	fprintf(out, "kind,ram_mib,workload,hot_mib,mode,policy,status,total_ms,downtime_ms,"
		     "postcopy_ms,faults,pages_pulled,pages_prefetched,fault_p50_us,fault_p90_us,"
		     "fault_p99_us,fault_p999_us,fault_max_us,rtt_4k_us,p50_vs_rtt,p99_vs_rtt,"
		     "guest_stall_ms,bytes,verified\n");
	rtt = rtt_4k_us(&rtt99);
	fprintf(out, "limit_rtt_4k,,,,,,,,,,,,,%.0f,,%.0f,,,%.0f,,,,,\n", rtt, rtt99, rtt);
	fflush(out);
	for (unsigned k = 0; k < o.repeat; k++)
		for (unsigned i = 0; i < nsz; i++)
			for (unsigned w = 0; w < ARRAY_SIZE(hot_sets); w++)
				for (unsigned m = 0; m < ARRAY_SIZE(runs); m++) {
					if (o.only && strcmp(o.only, runs[m].policy))
						continue;
					struct bench_case c = {
					    .mem = sizes[i],
					    .hot = hot_sets[w],
					    .channels = 2,
					    .dirty = "bitmap",
					    .prealloc = true,
					    .mode = runs[m].mode,
					    .policy = mig_policy_by_name(runs[m].policy),
					    .transport = &transport_uring};
					struct bench_result res;
					bench_migrate(&c, &res);
					const struct mig_report *r = &res.rep;
					bool post = !strcmp(r->mode, "postcopy");
					bool hyb = !strcmp(r->mode, "hybrid");
					const uint64_t *l = r->fault_lat_us;
					fprintf(out,
						"migration,%llu,%s,%llu,%s,%s,%s,%.1f,%.2f,%.1f,%"
						"llu,%llu,"
						"%llu,%llu,%llu,%llu,%llu,%llu,%.0f,%.2f,%.2f,%.1f,"
						"%llu,"
						"%s\n",
						(unsigned long long)(sizes[i] >> 20),
						hot_sets[w] ? "hot" : "idle",
						(unsigned long long)(hot_sets[w] >> 20), r->mode,
						r->policy,
						strcmp(r->status, "completed") ? r->status : "ok",
						r->total_ms, r->downtime_ms, r->postcopy_ms,
						(unsigned long long)r->faults,
						(unsigned long long)r->pages_pulled,
						(unsigned long long)r->pages_prefetched,
						(unsigned long long)l[0], (unsigned long long)l[1],
						(unsigned long long)l[2], (unsigned long long)l[3],
						(unsigned long long)l[4], rtt,
						(post || hyb) && r->faults ? (double)l[0] / rtt : 0,
						(post || hyb) && r->faults ? (double)l[2] / rtt : 0,
						r->guest_stall_ms, (unsigned long long)r->bytes,
						res.verified);
					fflush(out);
					if (o.json)
						mig_report_json(r, o.json);
				}
	if (out != stdout)
		fclose(out);
	if (o.json)
		fclose(o.json);
	return 0;
}
