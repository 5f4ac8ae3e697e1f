// SPDX-License-Identifier: MIT
/*
 * flit-bench-dirty: the cost of one dirty-tracking round, per tracker, as a
 * function of guest RAM size and of the number of pages dirtied per round.
 *
 * The memtouch guest touches all of its RAM once, then rewrites a hot set of
 * D pages per round and stops at a checkpoint; there the VMM times
 * vm_dirty_collect (harvest + re-protect) and, as the reference measured in
 * the same run, a memcpy of the same D pages (what sending them costs at
 * memory speed at best). Tracking starts at the first checkpoint, so
 * first-touch faults are not counted. One CSV row per (tracker, RAM, D).
 *
 * usage: flit-bench-dirty [--quick] [--rounds N] [--out FILE]
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/bitmap.h"
#include "common/log.h"
#include "common/util.h"
#include "vmm/vm.h"

#define MAX_ROUNDS 64

struct run {
	struct vm *vm;
	uint64_t *bitmap;
	uint8_t *scratch;
	uint32_t rounds;
	unsigned n;
	uint64_t collect_ns[MAX_ROUNDS];
	uint64_t copy_ns[MAX_ROUNDS];
	uint64_t pages[MAX_ROUNDS];
	int err;
};

static void on_checkpoint(void *opaque, struct vcpu *vcpu, uint32_t round)
{
	struct run *r = opaque;
	struct vm *vm = r->vm;
	uint64_t nr = mem_nr_pages(&vm->mem);

	(void)vcpu;
	if (round == 1) {
		r->err = vm_dirty_start(vm);
		return;
	}
	if (r->n >= MAX_ROUNDS || r->err)
		return;
	memset(r->bitmap, 0, BITMAP_WORDS(nr) * 8);
	uint64_t t0 = now_ns();
	r->err = vm_dirty_collect(vm, r->bitmap);
	uint64_t t1 = now_ns();
	uint64_t bit, k = 0;
	bitmap_for_each_set(bit, r->bitmap, nr)
	{
		memcpy(r->scratch + (k % 1024) * 4096, vm->mem.regions[0].hva + bit * 4096, 4096);
		k++;
	}
	uint64_t t2 = now_ns();
	r->collect_ns[r->n] = t1 - t0;
	r->copy_ns[r->n] = t2 - t1;
	r->pages[r->n] = k;
	r->n++;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static uint64_t median(uint64_t *v, unsigned n)
{
	qsort(v, n, sizeof(*v), cmp_u64);
	return n ? v[n / 2] : 0;
}

static int bench_one(FILE *out, const char *mode, uint64_t mem, uint64_t dirty_pages,
		     uint32_t rounds)
{
	struct vm_config cfg = {.mem_size = mem, .nr_vcpus = 1, .dirty_track = mode};
	struct run r = {.rounds = rounds};
	char args[128], path[4096];
	int e;

	e = vm_create(&cfg, &r.vm);
	if (e)
		return e;
	snprintf(path, sizeof(path), "%s/guests/memtouch.elf", FLIT_BUILD_DIR);
	snprintf(args, sizeof(args), "ws=%llu rounds=%u checkpoint",
		 (unsigned long long)dirty_pages * 4096, rounds + 1);
	e = vm_load_guest(r.vm, path, args);
	if (e)
		goto out;
	r.bitmap = bitmap_alloc(mem_nr_pages(&r.vm->mem));
	r.scratch = malloc(1024 * 4096);
	r.vm->serial.sink = NULL;
	r.vm->testdev.checkpoint = on_checkpoint;
	r.vm->testdev.checkpoint_opaque = &r;
	struct vm_result res;
	e = vm_start(r.vm);
	if (!e) {
		vm_wait(r.vm, 600000, &res);
		if (res.failed || res.timed_out) {
			log_err("%s", res.reason);
			e = -EIO;
		}
	}
	if (!e && r.err)
		e = r.err;
	if (!e && r.n) {
		uint64_t pages = median(r.pages, r.n);
		uint64_t c = median(r.collect_ns, r.n), m = median(r.copy_ns, r.n);
		fprintf(out, "%s,%llu,%llu,%llu,%u,%.1f,%.1f,%.3f,%.2f\n", mode,
			(unsigned long long)(mem >> 20), (unsigned long long)dirty_pages,
			(unsigned long long)pages, r.n, c / 1e3, m / 1e3,
			pages ? (double)c / (double)pages : 0.0, m ? (double)c / (double)m : 0.0);
		fflush(out);
	}
out:
	vm_destroy(r.vm);
	free(r.bitmap);
	free(r.scratch);
	return e;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"quick", no_argument, NULL, 'q'},
	    {"rounds", required_argument, NULL, 'r'},
	    {"out", required_argument, NULL, 'o'},
	    {0},
	};
	uint64_t mems_full[] = {256 * MiB, 1 * GiB, 2 * GiB, 4 * GiB};
	uint64_t mems_quick[] = {256 * MiB, 1 * GiB};
	uint64_t sets_full[] = {64, 1024, 16384};
	uint64_t sets_quick[] = {64, 4096};
	const char *modes[] = {"bitmap", "ring"};
	uint64_t *mems = mems_full, *sets = sets_full, rounds = 10;
	unsigned nmems = ARRAY_SIZE(mems_full), nsets = ARRAY_SIZE(sets_full);
	FILE *out = stdout;
	int c;

	log_set_prefix("flit-bench-dirty");
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'q':
			mems = mems_quick;
			sets = sets_quick;
			nmems = ARRAY_SIZE(mems_quick);
			nsets = ARRAY_SIZE(sets_quick);
			rounds = 5;
			break;
		case 'r':
			if (parse_uint(optarg, 1, MAX_ROUNDS - 1, &rounds))
				die("--rounds: 1 to %d", MAX_ROUNDS - 1);
			break;
		case 'o':
			out = fopen(optarg, "w");
			if (!out)
				die("%s: %s", optarg, strerror(errno));
			break;
		default:
			die("usage: flit-bench-dirty [--quick] [--rounds N] [--out FILE]");
		}
	}
	fprintf(out, "tracker,ram_mib,dirty_set_pages,pages_reported,rounds,collect_us,"
		     "memcpy_us,collect_ns_per_page,collect_vs_memcpy\n");
	for (unsigned m = 0; m < ARRAY_SIZE(modes); m++)
		for (unsigned i = 0; i < nmems; i++)
			for (unsigned s = 0; s < nsets; s++) {
				int e =
				    bench_one(out, modes[m], mems[i], sets[s], (uint32_t)rounds);
				if (e)
					die("%s, %llu MiB, %llu pages: %s", modes[m],
					    (unsigned long long)(mems[i] >> 20),
					    (unsigned long long)sets[s], strerror(-e));
			}
	if (out != stdout)
		fclose(out);
	return 0;
}
