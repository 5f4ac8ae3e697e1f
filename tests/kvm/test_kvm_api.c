// SPDX-License-Identifier: MIT
/*
 * The control API and flitctl, with real processes under real KVM: a source
 * flit serving --api, a destination flit --incoming, flitctl in between.
 * A migration requested through the API completes, the source process
 * leaves, the destination guest verifies every page; a cancelled migration
 * leaves the source guest running; bad requests get clear refusals; a
 * source killed mid-migration makes the destination give up cleanly; a
 * guest moves on from a destination through the API it serves.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util.h"
#include "tests/lib/proc.h"
#include "tests/lib/test.h"

static char tmpdir[] = "/tmp/flit-api-XXXXXX";
static char sock[256], token[256];

/* Runs flitctl with the given words; its stdout in out; returns its status. */
static int flitctl(char *out, size_t len, ...)
{
	const char *args[13];
	unsigned n = 0;
	va_list ap;
	char log[300];

	va_start(ap, len);
	for (const char *a; (a = va_arg(ap, const char *)) && n < 12;)
		args[n++] = a;
	va_end(ap);
	args[n] = NULL;
	snprintf(log, sizeof(log), "%s/flitctl.out", tmpdir);
	return proc_flitctl(sock, log, out, len, args);
}

/* migrate-status until the migration has ended (timeout_s at most). */
static void wait_ended(char *out, size_t len, int timeout_s)
{
	char log[300];
	snprintf(log, sizeof(log), "%s/flitctl.out", tmpdir);
	proc_flitctl_wait_ended(sock, log, out, len, timeout_s);
}

static void setup(void)
{
	TEST_ASSERT(mkdtemp(tmpdir) != NULL, "mkdtemp");
	snprintf(sock, sizeof(sock), "%s/api.sock", tmpdir);
	snprintf(token, sizeof(token), "%s/token", tmpdir);
	int fd = open(token, O_WRONLY | O_CREAT, 0600);
	TEST_ASSERT(write(fd, "api-test-token-0123456789\n", 26) == 26, "token");
	close(fd);
}

static pid_t start_source(const char *log, const char *ws)
{
	const char *argv[] = {test_build_path("flit"),
			      "--guest",
			      "memcheck",
			      "--mem",
			      "128M",
			      "--vcpus",
			      "2",
			      "rounds=0",
			      ws,
			      "--api",
			      sock,
			      "--token-file",
			      token,
			      "--timeout",
			      "300",
			      NULL};
	pid_t pid = proc_spawn(log, argv);
	for (int i = 0; i < 100 && access(sock, F_OK); i++)
		usleep(100000);
	TEST_ASSERT(access(sock, F_OK) == 0, "the API socket appeared");
	return pid;
}

/* A destination flit --incoming on addr, listening when this returns.
 * verify: the guest then runs a second, verifies itself and the host checks
 * every page; api: the socket it serves once the guest is there (or NULL);
 * recover: its --recover-timeout (NULL: the default). */
static pid_t start_dest_r(const char *log, const char *addr, bool verify, const char *api,
			  const char *recover)
{
	const char *argv[16] = {
	    test_build_path("flit"), "--incoming", addr, "--token-file", token, "--timeout", "300"};
	unsigned n = 7;

	if (verify) {
		argv[n++] = "--verify";
		argv[n++] = "--finish-after";
		argv[n++] = "1";
	}
	if (api) {
		argv[n++] = "--api";
		argv[n++] = api;
	}
	if (recover) {
		argv[n++] = "--recover-timeout";
		argv[n++] = recover;
	}
	argv[n] = NULL;
	pid_t pid = proc_spawn(log, argv);
	TEST_ASSERT(proc_wait_log(log, "listening for a migration", 60), "the destination listens");
	return pid;
}

static pid_t start_dest(const char *log, const char *addr, bool verify, const char *api)
{
	return start_dest_r(log, addr, verify, api, NULL);
}

static void migrate_through_api(void)
{
	char out[8192], slog[300], dlog[300];
	snprintf(slog, sizeof(slog), "%s/source.log", tmpdir);
	snprintf(dlog, sizeof(dlog), "%s/dest.log", tmpdir);
	pid_t dst = start_dest(dlog, "tcp:127.0.0.1:7341", true, NULL);
	pid_t src = start_source(slog, "ws=8m");

	TEST_ASSERT_EQ(flitctl(out, sizeof(out), "status", NULL), 0);
	TEST_ASSERT(strstr(out, "\"state\":\"running\""), "running");
	TEST_ASSERT_EQ(flitctl(out, sizeof(out), "frobnicate", NULL), 1);
	TEST_ASSERT(strstr(out, "unknown command"), "refused");
	TEST_ASSERT_EQ(
	    flitctl(out, sizeof(out), "migrate", "tcp:127.0.0.1:7341", "channels=99", NULL), 1);
	TEST_ASSERT(strstr(out, "'channels' must be an integer from 1 to 16"), "bounds");
	TEST_ASSERT_EQ(flitctl(out, sizeof(out), "migrate-cancel", NULL), 1);
	TEST_ASSERT_EQ(
	    flitctl(out, sizeof(out), "migrate", "tcp:127.0.0.1:7341", "channels=2", NULL), 0);
	TEST_ASSERT(strstr(out, "\"status\":\"completed\""), "completed");
	/* The guest's own view of its stop came back from the destination. */
	const char *gs = strstr(out, "\"guest_stall_ms\":");
	TEST_ASSERT(gs && atof(gs + 17) > 0, "guest_stall_ms in the report: %s", out);
	TEST_ASSERT_EQ(proc_wait(src, 60), 0);
	int drc = proc_wait(dst, 120);
	proc_read_file(dlog, out, sizeof(out));
	TEST_ASSERT(drc == 0, "destination exit %d, its log:\n%s", drc, out);
	TEST_ASSERT(strstr(out, "pages verified, 0 bad"), "destination verified: %s", out);
}

static void cancel_keeps_source(void)
{
	char out[8192], slog[300], dlog[300];
	snprintf(slog, sizeof(slog), "%s/source2.log", tmpdir);
	snprintf(dlog, sizeof(dlog), "%s/dest2.log", tmpdir);
	pid_t dst = start_dest(dlog, "tcp:127.0.0.1:7342", false, NULL);
	pid_t src = start_source(slog, "ws=8m");
	/* A second client follows the event stream meanwhile. */
	char elog[300];
	snprintf(elog, sizeof(elog), "%s/events.log", tmpdir);
	const char *eargv[] = {test_build_path("flitctl"), "--api", sock, "events", NULL};
	pid_t ev = proc_spawn(elog, eargv);

	usleep(300000);
	/* 20 MB/s: 128 MiB takes seconds, the cancel lands inside. */
	TEST_ASSERT_EQ(flitctl(out, sizeof(out), "migrate", "tcp:127.0.0.1:7342", "bandwidth=20M",
			       "--no-wait", NULL),
		       0);
	usleep(500000);
	TEST_ASSERT_EQ(flitctl(out, sizeof(out), "migrate-cancel", NULL), 0);
	wait_ended(out, sizeof(out), 10);
	TEST_ASSERT(strstr(out, "\"status\":\"cancelled\""), "cancelled");
	TEST_ASSERT_EQ(flitctl(out, sizeof(out), "status", NULL), 0);
	TEST_ASSERT(strstr(out, "\"state\":\"running\""), "the source guest runs on");
	TEST_ASSERT_EQ(flitctl(out, sizeof(out), "quit", NULL), 0);
	TEST_ASSERT_EQ(proc_wait(src, 60), 0);
	TEST_ASSERT(proc_wait(dst, 60) != 0, "the destination gave up");

	/* The events client saw the VM run, the migration go, and its end,
	 * then left when flit did. */
	TEST_ASSERT_EQ(proc_wait(ev, 30), 0);
	static char evs[1 << 20];
	proc_read_file(elog, evs, sizeof(evs));
	TEST_ASSERT(strstr(evs, "{\"event\":\"state\",\"state\":\"running\"}"),
		    "state event:\n%.2000s", evs);
	TEST_ASSERT(strstr(evs, "\"event\":\"progress\""), "progress events:\n%.2000s", evs);
	char *end = strstr(evs, "\"event\":\"migration\"");
	TEST_ASSERT(end, "the migration's end:\n%.2000s", evs);
	while (end > evs && end[-1] != '\n')
		end--;
	TEST_ASSERT(!strncmp(end, "{\"status\":\"cancelled\",", 22),
		    "the end says cancelled: %.300s", end);
	TEST_ASSERT(strstr(end, "\"report\":{"), "with its report: %.300s", end);
}

/* The source process dies in the middle: the destination discards what it
 * had and exits with the migration-failed status and a reason. */
/* mode: "precopy" or "postcopy". In post-copy the source dies after the
 * switch: the destination's guest then lacks pages; it waits its recovery
 * time (2 s here) for the source to reconnect, then must say so and exit,
 * not hang with vCPUs blocked on missing pages. */
static void source_killed_in(const char *mode, const char *port_addr, const char *tag)
{
	char out[8192], dlog[300], slog[300];
	snprintf(dlog, sizeof(dlog), "%s/dest-%s.log", tmpdir, tag);
	snprintf(slog, sizeof(slog), "%s/source-%s.log", tmpdir, tag);
	const char *sargv[] = {test_build_path("flit"),
			       "--guest",
			       "memcheck",
			       "--mem",
			       "128M",
			       "rounds=0",
			       "--migrate-to",
			       port_addr,
			       "--token-file",
			       token,
			       "--migrate-after",
			       "0.2",
			       "--bandwidth",
			       "10M",
			       "--mode",
			       mode,
			       NULL};
	bool post = !strcmp(mode, "postcopy");
	pid_t dst = start_dest_r(dlog, port_addr, false, NULL, post ? "2" : NULL);
	pid_t src = proc_spawn(slog, sargv);
	usleep(1500000); /* inside the ~13 s the capped migration would take */
	kill(src, SIGKILL);
	waitpid(src, NULL, 0);
	TEST_ASSERT_EQ(proc_wait(dst, 60), 76);
	proc_read_file(dlog, out, sizeof(out));
	/* The connection closed, or was reset (where the kill met a send). */
	TEST_ASSERT(strstr(out, "migration failed") &&
			(strstr(out, "closed") || strstr(out, "reset")),
		    "the destination says why: %s", out);
	TEST_ASSERT(!post || strstr(out, "the source did not reconnect within 2 s"),
		    "after waiting for a recovery: %s", out);
	printf("  destination: %.300s\n", strstr(out, "migration failed"));
}

static void source_killed(void)
{
	source_killed_in("precopy", "tcp:127.0.0.1:7343", "pre");
}

static void source_killed_during_postcopy(void)
{
	source_killed_in("postcopy", "tcp:127.0.0.1:7346", "post");
}

/* A guest moves twice: A -> B through A's API, then B -> C through the API
 * that B serves once the guest has arrived; C verifies every page. */
static void migrate_onward(void)
{
	char out[8192], alog[300], blog[300], clog[300], asock[256], bsock[256];
	snprintf(alog, sizeof(alog), "%s/a.log", tmpdir);
	snprintf(blog, sizeof(blog), "%s/b.log", tmpdir);
	snprintf(clog, sizeof(clog), "%s/c.log", tmpdir);
	snprintf(bsock, sizeof(bsock), "%s/b.sock", tmpdir);
	pid_t b = start_dest(blog, "tcp:127.0.0.1:7344", false, bsock);
	pid_t c = start_dest(clog, "tcp:127.0.0.1:7345", true, NULL);
	pid_t a = start_source(alog, "ws=4m");

	TEST_ASSERT(access(bsock, F_OK) != 0, "B serves no API before the guest is there");
	TEST_ASSERT_EQ(flitctl(out, sizeof(out), "migrate", "tcp:127.0.0.1:7344", NULL), 0);
	TEST_ASSERT(strstr(out, "\"status\":\"completed\""), "A -> B completed");
	TEST_ASSERT_EQ(proc_wait(a, 60), 0);
	for (int i = 0; i < 100 && access(bsock, F_OK); i++)
		usleep(100000);
	snprintf(asock, sizeof(asock), "%s", sock);
	snprintf(sock, sizeof(sock), "%s", bsock);
	int rs = flitctl(out, sizeof(out), "status", NULL);
	bool running = strstr(out, "\"state\":\"running\"") != NULL;
	int rm = flitctl(out, sizeof(out), "migrate", "tcp:127.0.0.1:7345", NULL);
	snprintf(sock, sizeof(sock), "%s", asock);
	TEST_ASSERT_EQ(rs, 0);
	TEST_ASSERT(running, "the guest runs on B");
	TEST_ASSERT_EQ(rm, 0);
	TEST_ASSERT(strstr(out, "\"status\":\"completed\""), "B -> C completed");
	TEST_ASSERT_EQ(proc_wait(b, 60), 0);
	int crc = proc_wait(c, 120);
	proc_read_file(clog, out, sizeof(out));
	TEST_ASSERT(crc == 0, "C exit %d, its log:\n%s", crc, out);
	TEST_ASSERT(strstr(out, "pages verified, 0 bad"), "C verified: %s", out);
}

static double json_num(const char *text, const char *key)
{
	char k[64];
	snprintf(k, sizeof(k), "\"%s\":", key);
	const char *p = strstr(text, k);
	return p ? strtod(p + strlen(k), NULL) : -1;
}

/* Policies chosen through the API: A -> B in post-copy with the prefetch
 * policy (its mode implied), then B -> C as a hybrid whose push goes in
 * the order of the guest's latest writes; C verifies every page. Bad
 * names and a policy for another mode are refused first. */
static void policies_through_api(void)
{
	char out[16384], alog[300], blog[300], clog[300], asock[256], bsock[256];
	snprintf(alog, sizeof(alog), "%s/pa.log", tmpdir);
	snprintf(blog, sizeof(blog), "%s/pb.log", tmpdir);
	snprintf(clog, sizeof(clog), "%s/pc.log", tmpdir);
	snprintf(bsock, sizeof(bsock), "%s/pb.sock", tmpdir);
	pid_t b = start_dest(blog, "tcp:127.0.0.1:7348", false, bsock);
	pid_t c = start_dest(clog, "tcp:127.0.0.1:7349", true, NULL);
	pid_t a = start_source(alog, "ws=16m");

	TEST_ASSERT_EQ(
	    flitctl(out, sizeof(out), "migrate", "tcp:127.0.0.1:7348", "policy=fastest", NULL), 1);
	TEST_ASSERT(strstr(out, "'policy' must be one of precopy-default"), "unknown: %s", out);
	TEST_ASSERT_EQ(flitctl(out, sizeof(out), "migrate", "tcp:127.0.0.1:7348", "mode=hybrid",
			       "policy=postcopy-prefetch", NULL),
		       1);
	TEST_ASSERT(strstr(out, "policy postcopy-prefetch is not for mode hybrid"), "%s", out);
	/* The push capped at 40 MB/s (about 3 s for 128 MiB) is still far
	 * behind when the guest faults: the pages after a faulted one have not
	 * left yet, and go along with its answer. (Uncapped, on a slow host
	 * the push has every neighbour on its way already.) */
	TEST_ASSERT_EQ(flitctl(out, sizeof(out), "migrate", "tcp:127.0.0.1:7348",
			       "policy=postcopy-prefetch", "bandwidth=40M", NULL),
		       0);
	TEST_ASSERT(strstr(out, "\"status\":\"completed\"") &&
			strstr(out, "\"mode\":\"postcopy\"") &&
			strstr(out, "\"policy\":\"postcopy-prefetch\""),
		    "A -> B in post-copy with the policy: %s", out);
	double faults = json_num(out, "faults"), pre = json_num(out, "pages_prefetched");
	printf("  %.0f faults, %.0f pages sent along with their answers\n", faults, pre);
	TEST_ASSERT(faults > 0 && pre > 0, "the prefetch sent pages along: %s", out);
	TEST_ASSERT_EQ(proc_wait(a, 60), 0);
	for (int i = 0; i < 100 && access(bsock, F_OK); i++)
		usleep(100000);
	snprintf(asock, sizeof(asock), "%s", sock);
	snprintf(sock, sizeof(sock), "%s", bsock);
	int rm = flitctl(out, sizeof(out), "migrate", "tcp:127.0.0.1:7349", "policy=hybrid-recent",
			 NULL);
	snprintf(sock, sizeof(sock), "%s", asock);
	TEST_ASSERT_EQ(rm, 0);
	TEST_ASSERT(strstr(out, "\"status\":\"completed\"") && strstr(out, "\"mode\":\"hybrid\"") &&
			strstr(out, "\"policy\":\"hybrid-recent\""),
		    "B -> C as a hybrid with the policy: %s", out);
	TEST_ASSERT_EQ(proc_wait(b, 60), 0);
	int crc = proc_wait(c, 120);
	proc_read_file(clog, out, sizeof(out));
	TEST_ASSERT(crc == 0, "C exit %d, its log:\n%s", crc, out);
	TEST_ASSERT(strstr(out, "pages verified, 0 bad"), "C verified: %s", out);
}

/* A pre-copy told to switch to post-copy through the API: it finishes as a
 * hybrid, and the destination's guest verifies every page. */
static void switch_to_postcopy(void)
{
	char out[8192], slog[300], dlog[300];
	snprintf(slog, sizeof(slog), "%s/source5.log", tmpdir);
	snprintf(dlog, sizeof(dlog), "%s/dest5.log", tmpdir);
	pid_t dst = start_dest(dlog, "tcp:127.0.0.1:7347", true, NULL);
	pid_t src = start_source(slog, "ws=8m");

	TEST_ASSERT_EQ(flitctl(out, sizeof(out), "migrate-postcopy", NULL), 1);
	TEST_ASSERT(strstr(out, "no migration is running"), "refused without a migration");
	/* 40 MB/s: round 1 of 128 MiB takes about 3 s; the switch comes after it. */
	TEST_ASSERT_EQ(flitctl(out, sizeof(out), "migrate", "tcp:127.0.0.1:7347", "bandwidth=40M",
			       "--no-wait", NULL),
		       0);
	usleep(500000);
	TEST_ASSERT_EQ(flitctl(out, sizeof(out), "migrate-postcopy", NULL), 0);
	wait_ended(out, sizeof(out), 60);
	TEST_ASSERT(strstr(out, "\"status\":\"completed\""), "completed: %s", out);
	TEST_ASSERT(strstr(out, "\"mode\":\"hybrid\""), "as a hybrid: %s", out);
	TEST_ASSERT_EQ(proc_wait(src, 60), 0);
	int drc = proc_wait(dst, 120);
	proc_read_file(dlog, out, sizeof(out));
	TEST_ASSERT(drc == 0, "destination exit %d, its log:\n%s", drc, out);
	TEST_ASSERT(strstr(out, "pages verified, 0 bad"), "destination verified: %s", out);
}

int main(int argc, char **argv)
{
	static const struct test_case cases[] = {
	    TEST_CASE(migrate_through_api),  TEST_CASE(cancel_keeps_source),
	    TEST_CASE(source_killed),	     TEST_CASE(source_killed_during_postcopy),
	    TEST_CASE(migrate_onward),	     TEST_CASE(switch_to_postcopy),
	    TEST_CASE(policies_through_api),
	};
	if (!test_have_dev_kvm())
		return 77;
	setup();
	return test_main(argc, argv, cases, ARRAY_SIZE(cases));
}
