// SPDX-License-Identifier: MIT
/*
 * Guest RAM in memsvc under real KVM, against a real flit-memsvc process:
 * memcheck with a cache smaller than its working set (pages are evicted,
 * written back and fetched again, and every page still holds what the guest
 * wrote); a migration through memsvc (the destination takes the namespace
 * over, the source is fenced off it); a destination that fails after
 * taking the namespace, before its guest ran (the source takes it back and
 * runs on, nothing lost); the service killed and restarted
 * with its backing directory while the guest runs (the guest waits, then
 * goes on with nothing lost); the service gone for good or the namespace
 * taken by another owner (flit stops with a clear error and status 74).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "memsvc/client.h"
#include "migrate/conn.h"
#include "migrate/migrate.h"
#include "tests/lib/guest_vm.h"
#include "tests/lib/memsvc_peer.h"
#include "tests/lib/proc.h"
#include "tests/lib/test.h"
#include "vmm/remote.h"

#define TOKEN "0123456789abcdef-memsvc-token"

static struct remote_mem *attach(struct vm *vm, const struct memsvc_peer *s, const char *ns,
				 uint64_t cache, int retry_ms)
{
	char url[128];
	struct remote_mem *rm;
	struct remote_params p = {.url = url,
				  .token = (const uint8_t *)TOKEN,
				  .token_len = strlen(TOKEN),
				  .cache_bytes = cache,
				  .retry_ms = retry_ms};

	snprintf(url, sizeof(url), "memsvc://127.0.0.1:%u/%s", s->port, ns);
	TEST_ASSERT_EQ(remote_open(&rm, vm, &p), 0);
	return rm;
}

static void print_stats(const char *what, struct remote_mem *rm, struct pager_stats *ps)
{
	remote_stats(rm, ps);
	printf("  %s: %llu fetched (%llu never written), %llu evicted, %llu written back, "
	       "%llu first writes, %llu resident, %llu reconnects; fault p50 %llu us, p99 %llu "
	       "us\n",
	       what, (unsigned long long)ps->fetched, (unsigned long long)ps->fetched_zero,
	       (unsigned long long)ps->evicted, (unsigned long long)ps->written,
	       (unsigned long long)ps->wp_faults, (unsigned long long)ps->resident,
	       (unsigned long long)ps->reconnects, (unsigned long long)ps->fetch_p50_us,
	       (unsigned long long)ps->fetch_p99_us);
}

/* The guest checks itself and exits; the host checks every page again
 * (through the pager: pages not resident are fetched). */
static void verify_exit(struct vm *vm, const char *where)
{
	uint64_t checked = guest_vm_verify_exit(vm, where);
	TEST_ASSERT(checked > 10000, "%s: %llu pages checked", where, (unsigned long long)checked);
}

static void destroy(struct vm *vm, struct remote_mem *rm)
{
	vm_pause(vm);
	remote_close(rm);
	vm_destroy(vm);
}

/* 64 MiB guest, 16 MiB working set, 4 MiB cache: most of what it touches
 * comes and goes through memsvc, and nothing is lost. */
static void small_cache_memcheck(void)
{
	struct memsvc_peer s;
	struct pager_stats ps;

	memsvc_peer_start(&s, "small-cache", 0, NULL);
	struct vm *vm =
	    guest_vm_create(64 * MiB, 2, "bitmap", MEM_ANON, "memcheck", "ws=16m rounds=0", NULL);
	struct remote_mem *rm = attach(vm, &s, "small-cache", 4 * MiB, 0);
	TEST_ASSERT_EQ(vm_start(vm), 0);
	TEST_ASSERT_EQ(testdev_wait_progress(&vm->testdev, 2, 4, 120000), 0);
	verify_exit(vm, "4 MiB cache");
	print_stats("4 MiB cache", rm, &ps);
	TEST_ASSERT(ps.evicted > 4096 && ps.written > 4096, "pages went out and were written back");
	TEST_ASSERT(ps.fetched > ps.fetched_zero, "pages came back from memsvc");
	/* The budget is kept by the evictor, behind the faults: the host
	 * check just read every page in, so give it a moment to catch up. */
	for (int i = 0; i < 100 && ps.resident > 1024 + 64; i++) {
		usleep(50000);
		remote_stats(rm, &ps);
	}
	TEST_ASSERT(ps.resident <= 1024 + 64, "the cache came back to its budget: %llu pages",
		    (unsigned long long)ps.resident);
	TEST_ASSERT_EQ(remote_failed(rm, NULL, 0), 0);
	destroy(vm, rm);
	memsvc_peer_kill(&s);
}

/* A migration in mode memsvc, its cache handled as how says, of a guest
 * rewriting ws (against a 32 MiB cache): the destination takes the
 * namespace, runs, and passes memcheck; the source is fenced off. */
static uint64_t last_discarded;

/* A 128 MiB memcheck guest rewriting ws, its RAM in namespace ns behind a
 * cache of cache bytes, running and past its first rounds. */
static struct vm *memsvc_guest(const struct memsvc_peer *s, const char *ns, const char *ws,
			       uint64_t cache, struct remote_mem **rm)
{
	char args[64];

	snprintf(args, sizeof(args), "ws=%s rounds=0", ws);
	struct vm *vm = guest_vm_create(128 * MiB, 2, "bitmap", MEM_ANON, "memcheck", args, NULL);
	*rm = attach(vm, s, ns, cache, 0);
	TEST_ASSERT_EQ(vm_start(vm), 0);
	TEST_ASSERT_EQ(testdev_wait_progress(&vm->testdev, 2, 3, 120000), 0);
	return vm;
}

/* A destination listening on loopback (its socket in *lfd) and a source's
 * parameters for it, mode memsvc, cache handled as how. */
static void memsvc_pair(struct mig_dest_thread *d, struct mig_params *p, int *lfd, char *addr,
			size_t addrlen, enum mig_memsvc_cache how, uint64_t cache)
{
	uint16_t port;

	*lfd = mig_listen("tcp:127.0.0.1:0", &port);
	TEST_ASSERT(*lfd >= 0, "listen");
	mig_dest_params_default(&d->p);
	d->p.listen_fd = *lfd;
	d->p.accept_timeout_ms = 30000;
	d->p.token_len = strlen(TOKEN);
	memcpy(d->p.token, TOKEN, d->p.token_len);
	d->p.cache_bytes = cache;
	mig_params_default(p);
	snprintf(addr, addrlen, "tcp:127.0.0.1:%u", port);
	p->addr = addr;
	p->token_len = strlen(TOKEN);
	memcpy(p->token, TOKEN, p->token_len);
	p->mode = MIG_MODE_MEMSVC;
	p->memsvc_cache = how;
	p->timeout_ms = 20000;
}

static void migrate_memsvc(enum mig_memsvc_cache how, const char *ws, uint64_t cache,
			   uint32_t rounds)
{
	struct memsvc_peer s;
	struct mig_dest_thread d;
	struct mig_params p;
	struct mig_report rep;
	struct remote_mem *drm = NULL, *rm;
	char addr[64];
	int lfd;

	memsvc_peer_start(&s, "migrating", 0, NULL);
	struct vm *src = memsvc_guest(&s, "migrating", ws, cache, &rm);
	memsvc_pair(&d, &p, &lfd, addr, sizeof(addr), how, cache);
	d.p.remote_out = &drm;
	/* Checked as it arrives, before the guest rewrites anything there:
	 * a stale page kept would show now, and be gone after a round. */
	d.p.start_paused = true;
	if (rounds) { /* exactly this many, slow ones, the guest at full speed */
		p.downtime_limit_ms = 0;
		p.max_rounds = rounds;
		p.auto_converge = false;
		p.bandwidth_limit = 16 * MiB;
	}
	p.remote = rm;
	TEST_ASSERT_EQ(mig_dest_spawn(&d), 0);
	int r = mig_source_run(src, &p, &rep);
	mig_dest_join(&d);
	close(lfd);
	mig_report_json(&rep, stdout);
	TEST_ASSERT(r == 0, "source: %s", rep.error);
	TEST_ASSERT(d.r == 0, "destination: %s", d.rep.error);
	TEST_ASSERT(!strcmp(rep.mode, "memsvc") && !strcmp(d.rep.mode, "memsvc"), "mode %s / %s",
		    rep.mode, d.rep.mode);
	TEST_ASSERT(!strcmp(rep.memsvc_cache, mig_memsvc_cache_name(how)), "cache %s",
		    rep.memsvc_cache);
	TEST_ASSERT(drm, "the destination keeps its remote memory");
	uint64_t travelled = rep.pages_sent + rep.zero_pages, ram = 128 * MiB / 4096;
	if (how == MIG_MEMSVC_WRITEBACK) {
		TEST_ASSERT(rep.hot_pages > 0 && rep.hot_pages == d.rep.hot_pages,
			    "hot pages %llu / %llu", (unsigned long long)rep.hot_pages,
			    (unsigned long long)d.rep.hot_pages);
		/* On the wire: the first MiB and what was dirty at the
		 * pause, no more (the rest is in memsvc). */
		TEST_ASSERT(travelled == 256 + rep.written_paused,
			    "%llu pages travelled, %llu dirty at the pause",
			    (unsigned long long)travelled, (unsigned long long)rep.written_paused);
		TEST_ASSERT(
		    rep.written_back > 0 && rep.discarded == 0, "%llu written back, %llu discarded",
		    (unsigned long long)rep.written_back, (unsigned long long)rep.discarded);
	} else {
		/* The cache travelled (and what the guest rewrote
		 * meanwhile), not the RAM; nothing was written back by the
		 * migration and no hot list was needed. */
		TEST_ASSERT(travelled >= cache / 4096 / 2 && travelled < ram,
			    "%llu pages travelled", (unsigned long long)travelled);
		TEST_ASSERT(rep.written_back == 0 && rep.hot_pages == 0 && d.rep.hot_pages == 0,
			    "%llu written back, %llu hot pages",
			    (unsigned long long)rep.written_back,
			    (unsigned long long)rep.hot_pages);
	}
	printf("  memsvc migration (cache %s, ws=%s): %.1f ms total, %.2f ms downtime, %llu "
	       "pages on the wire, %llu written back while running, %llu sent while paused, "
	       "%llu stale copies dropped, %llu hot pages\n",
	       rep.memsvc_cache, ws, rep.total_ms, rep.downtime_ms, (unsigned long long)travelled,
	       (unsigned long long)rep.written_back, (unsigned long long)rep.written_paused,
	       (unsigned long long)rep.discarded, (unsigned long long)rep.hot_pages);
	last_discarded = rep.discarded;
	uint64_t checked = 0, bad = 1;
	TEST_ASSERT_EQ(vm_verify_memcheck(d.vm, &checked, &bad), 0);
	TEST_ASSERT(bad == 0 && checked > 0, "on arrival, %llu of %llu pages are stale or wrong",
		    (unsigned long long)bad, (unsigned long long)checked);
	TEST_ASSERT_EQ(vm_resume(d.vm), 0);
	/* The source is fenced: the namespace has a newer owner. */
	TEST_ASSERT_EQ(remote_owned(rm), -ESTALE);
	TEST_ASSERT_EQ(remote_owned(drm), 0);
	destroy(src, rm);
	uint32_t pr = testdev_slot(&d.vm->testdev, 0).progress;
	TEST_ASSERT_EQ(testdev_wait_progress(&d.vm->testdev, 2, pr + 2, 120000), 0);
	verify_exit(d.vm, "destination");
	destroy(d.vm, drm);
	memsvc_peer_kill(&s);
}

static void migrate_cache_sent(void)
{
	migrate_memsvc(MIG_MEMSVC_SEND, "16m", 32 * MiB, 0);
}

/* A working set four times the cache, through six rounds at 16 MiB/s (the
 * first takes half a second): pages go back
 * to memsvc and come again while the rounds run, so copies the destination got go stale and
 * must be dropped there (memcheck at the destination says whether they
 * were). */
static void migrate_cache_sent_churning(void)
{
	migrate_memsvc(MIG_MEMSVC_SEND, "32m", 8 * MiB, 6);
	TEST_ASSERT(last_discarded > 0, "no copy went stale: the case tested nothing");
}

static void migrate_cache_written_back(void)
{
	migrate_memsvc(MIG_MEMSVC_WRITEBACK, "16m", 32 * MiB, 0);
}

/* The destination takes the namespace (fencing the source off it), then
 * fails before READY, as if it died there. Its guest never ran, so the
 * source takes the namespace back and its guest runs on: with a working
 * set four times the cache, pages keep going to memsvc and coming back,
 * which only works with the namespace back in the source's hands, and
 * memcheck then checks every page. Before the retake, such a source gave
 * the guest up as lost. */
static void migrate_dest_fails_after_take(void)
{
	struct memsvc_peer s;
	struct mig_dest_thread d;
	struct mig_params p;
	struct mig_report rep;
	struct remote_mem *rm;
	struct pager_stats before, after;
	char addr[64];
	int lfd;

	memsvc_peer_start(&s, "retake", 0, NULL);
	struct vm *src = memsvc_guest(&s, "retaken", "32m", 8 * MiB, &rm);
	memsvc_pair(&d, &p, &lfd, addr, sizeof(addr), MIG_MEMSVC_SEND, 8 * MiB);
	d.p.fail_after_take = true;
	p.remote = rm;
	uint64_t epoch = remote_epoch(rm);
	TEST_ASSERT_EQ(mig_dest_spawn(&d), 0);
	int r = mig_source_run(src, &p, &rep);
	mig_dest_join(&d);
	close(lfd);
	mig_report_json(&rep, stdout);
	TEST_ASSERT(r != 0 && d.r != 0, "the migration failed (%d / %d)", r, d.r);
	TEST_ASSERT(!strcmp(rep.status, "failed") && rep.retaken, "status %s, retaken %d: %s",
		    rep.status, rep.retaken, rep.error);
	TEST_ASSERT(strstr(rep.error, "taken back"), "error: %s", rep.error);
	/* Three owners: the source, the destination, the source again. */
	TEST_ASSERT(remote_epoch(rm) == epoch + 2, "epoch %llu, was %llu",
		    (unsigned long long)remote_epoch(rm), (unsigned long long)epoch);
	TEST_ASSERT_EQ(remote_owned(rm), 0);
	remote_stats(rm, &before);
	uint32_t pr = testdev_slot(&src->testdev, 0).progress;
	TEST_ASSERT_EQ(testdev_wait_progress(&src->testdev, 2, pr + 3, 120000), 0);
	print_stats("source after the retake", rm, &after);
	TEST_ASSERT(after.written > before.written && after.fetched > before.fetched,
		    "pages went to memsvc and came back (%llu -> %llu written, %llu -> %llu "
		    "fetched)",
		    (unsigned long long)before.written, (unsigned long long)after.written,
		    (unsigned long long)before.fetched, (unsigned long long)after.fetched);
	TEST_ASSERT_EQ(remote_failed(rm, NULL, 0), 0);
	verify_exit(src, "source after the retake");
	destroy(src, rm);
	memsvc_peer_kill(&s);
}

/* memsvc killed and restarted on its directory while the guest runs with
 * pages out: the guest waits for its pages, then goes on; every page
 * written back before the kill is still there. */
static void service_restart_mid_run(void)
{
	struct memsvc_peer s;
	struct pager_stats ps;
	char dir[128];

	snprintf(dir, sizeof(dir), "%s/store", memsvc_peer_tmp());
	memsvc_peer_start(&s, "restarted", 0, "--dir", dir, NULL);
	struct vm *vm =
	    guest_vm_create(64 * MiB, 2, "bitmap", MEM_ANON, "memcheck", "ws=16m rounds=0", NULL);
	struct remote_mem *rm = attach(vm, &s, "restarted", 4 * MiB, 30000);
	TEST_ASSERT_EQ(vm_start(vm), 0);
	TEST_ASSERT_EQ(testdev_wait_progress(&vm->testdev, 2, 2, 120000), 0);
	memsvc_peer_kill(&s);
	usleep(500000);
	memsvc_peer_start(&s, "restarted2", s.port, "--dir", dir, NULL);
	uint32_t pr = testdev_slot(&vm->testdev, 0).progress;
	TEST_ASSERT_EQ(testdev_wait_progress(&vm->testdev, 2, pr + 2, 120000), 0);
	verify_exit(vm, "after the restart");
	print_stats("restart", rm, &ps);
	TEST_ASSERT(ps.reconnects >= 1, "the pager reconnected");
	TEST_ASSERT_EQ(remote_failed(rm, NULL, 0), 0);
	destroy(vm, rm);
	memsvc_peer_kill(&s);
	char cmd[160];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	TEST_ASSERT_EQ(system(cmd), 0);
}

static int run_flit(const char *log, const char *const *args, pid_t *pid)
{
	const char *argv[32] = {test_build_path("flit")};
	unsigned n = 1;

	for (; args[n - 1] && n < 31; n++)
		argv[n] = args[n - 1];
	argv[n] = NULL;
	*pid = proc_spawn(log, argv);
	return *pid > 0 ? 0 : -1;
}

/* flit with its RAM in memsvc: the service goes away for good, or another
 * owner takes the namespace. Either way flit stops with status 74 and says
 * why; it never runs on with pages it cannot have. */
static void flit_stops_clearly(bool takeover)
{
	struct memsvc_peer s;
	char url[128], log[64], tok[64], text[8192], sock[96];
	pid_t pid;

	memsvc_peer_start(&s, takeover ? "taken-over" : "gone", 0, NULL);
	snprintf(url, sizeof(url), "memsvc://127.0.0.1:%u/cli", s.port);
	snprintf(log, sizeof(log), "/tmp/flit-memsvc-cli-%d.log", (int)getpid());
	snprintf(tok, sizeof(tok), "/tmp/flit-memsvc-tok-%d", (int)getpid());
	FILE *f = fopen(tok, "w");
	TEST_ASSERT(f && fputs(TOKEN, f) >= 0 && !fclose(f), "token file");
	const char *a[] = {"--guest",
			   "memcheck",
			   "--mem",
			   "64M",
			   "--vcpus",
			   "2",
			   "--cache",
			   "4M",
			   "--mem-backend",
			   url,
			   "--token-file",
			   tok,
			   "--memsvc-timeout",
			   "3",
			   "ws=16m",
			   "rounds=0",
			   "--api",
			   sock,
			   NULL};
	snprintf(sock, sizeof(sock), "/tmp/flit-memsvc-api-%d.sock", (int)getpid());
	TEST_ASSERT_EQ(run_flit(log, a, &pid), 0);
	TEST_ASSERT(proc_wait_log(log, "guest RAM in memsvc", 30), "flit attached");
	usleep(1500000);
	/* The API tells where the RAM is and how the cache does. */
	char clog[96], status[4096];
	snprintf(clog, sizeof(clog), "/tmp/flit-memsvc-ctl-%d.log", (int)getpid());
	const char *ctl[] = {test_build_path("flitctl"), "--api", sock, "status", NULL};
	TEST_ASSERT(proc_wait_log(log, "API on", 10), "the API is up");
	TEST_ASSERT_EQ(proc_wait(proc_spawn(clog, ctl), 20), 0);
	proc_read_file(clog, status, sizeof(status));
	unlink(clog);
	printf("  flitctl status: %.300s\n", status);
	TEST_ASSERT(strstr(status, "\"remote_memory\"") && strstr(status, url) &&
			strstr(status, "\"fetched_pages\"") && strstr(status, "\"resident_pages\""),
		    "status has the remote memory: %s", status);
	/* A migration asked for with a cache handling that does not exist
	 * is refused, and the guest runs on. */
	const char *bad[] = {
	    test_build_path("flitctl"), "--api", sock, "migrate", "tcp:127.0.0.1:9",
	    "memsvc_cache=later",	NULL};
	TEST_ASSERT_EQ(proc_wait(proc_spawn(clog, bad), 20), 1);
	proc_read_file(clog, status, sizeof(status));
	unlink(clog);
	TEST_ASSERT(strstr(status, "'memsvc_cache' must be") && strstr(status, "writeback"),
		    "refused: %s", status);
	if (takeover) {
		char hex[2 * sizeof(TOKEN)];
		for (size_t i = 0; i < strlen(TOKEN); i++)
			sprintf(hex + 2 * i, "%02x", (unsigned char)TOKEN[i]);
		struct memsvc_client *c = memsvc_peer_connect(s.port);
		uint64_t epoch = 0;
		TEST_ASSERT_EQ(memsvc_open(c, "cli", hex, &epoch, NULL), 0);
		memsvc_close(c);
	} else {
		memsvc_peer_kill(&s);
	}
	/* Gone for good: the pager retries for 3 s before it gives up. */
	int st = proc_wait(pid, 60);
	proc_read_tail(log, text, sizeof(text));
	printf("  flit -> %d: ...%s\n", st, strstr(text, "flit: error") ?: text);
	TEST_ASSERT(st == 74, "flit stops with status 74: %d\n%s", st, text);
	TEST_ASSERT(strstr(text, "out of reach"), "it says why:\n%s", text);
	if (takeover)
		TEST_ASSERT(strstr(text, "handed over") || strstr(text, "epoch") ||
				strstr(text, "stale") || strstr(text, "Stale"),
			    "it names the hand-over:\n%s", text);
	unlink(log);
	unlink(tok);
	memsvc_peer_kill(&s);
}

static void service_gone_for_good(void)
{
	flit_stops_clearly(false);
}

static void namespace_taken_over(void)
{
	flit_stops_clearly(true);
}

int main(int argc, char **argv)
{
	static const struct test_case cases[] = {
	    TEST_CASE(small_cache_memcheck),	    TEST_CASE(migrate_cache_sent),
	    TEST_CASE(migrate_cache_sent_churning), TEST_CASE(migrate_cache_written_back),
	    TEST_CASE(service_restart_mid_run),	    TEST_CASE(service_gone_for_good),
	    TEST_CASE(namespace_taken_over),	    TEST_CASE(migrate_dest_fails_after_take),
	};
	if (!memsvc_peer_setup("flit-kvm-memsvc"))
		return 1;
	return test_main(argc, argv, cases, ARRAY_SIZE(cases));
}
