// SPDX-License-Identifier: MIT
/*
 * Migrations between two network namespaces joined by a veth pair, the
 * link shaped by tbf: as between two hosts, not over loopback. Real flit
 * processes under real KVM, one per namespace.
 *
 * - Through a link shaped to 400 Mbit/s the migration completes, the
 *   destination guest verifies every page, and the report's throughput is
 *   under the link's rate (proof that the pages took the shaped path).
 * - The link goes down in the middle of a migration: the source gives up
 *   with a reason after its network timeout and its guest runs on; the link
 *   comes back and a second migration to a new destination completes.
 * - The link goes down during post-copy, after the switch: both sides wait
 *   (the source in phase postcopy-paused, the destination's guest blocked
 *   on the pages it lacks); the link comes back, flitctl migrate-recover
 *   reconnects, the migration completes, and the destination's guest
 *   verifies every page; with anonymous and with memfd destination RAM.
 * - The same break, and the source is told to cancel while it waits: the
 *   guest is lost, and said to be (source and destination exit 76 with the
 *   reason; the destination after its --recover-timeout).
 *
 * Needs root, ip and tc (iproute2), and the veth and sch_tbf modules.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util.h"
#include "tests/lib/proc.h"
#include "tests/lib/test.h"

static char tmpdir[] = "/tmp/flit-net-XXXXXX";
static char token[256], sock[256];
static char ns_src[32], ns_dst[32], if_src[16], if_dst[16];
static const char *ip_cmd, *tc_cmd;
static unsigned net_id;

/* Runs a shell command, echoing it; returns its exit status. */
__attribute__((format(printf, 1, 2))) static int sh(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	int r = system(cmd);
	int rc = r < 0 ? -1 : WIFEXITED(r) ? WEXITSTATUS(r) : 128;
	if (rc)
		printf("  $ %s -> %d\n", cmd, rc);
	return rc;
}

static void net_down(void)
{
	if (!ns_src[0])
		return;
	sh("%s netns del %s 2>/dev/null || true", ip_cmd, ns_src);
	sh("%s netns del %s 2>/dev/null || true", ip_cmd, ns_dst);
}

/* Two namespaces, 10.99.N.1 (source) and 10.99.N.2 (destination), a veth
 * pair between them, both ends shaped to rate. */
static void net_up(const char *rate)
{
	net_down();
	TEST_ASSERT(!sh("%s netns add %s && %s netns add %s", ip_cmd, ns_src, ip_cmd, ns_dst),
		    "creating network namespaces (needs root)");
	TEST_ASSERT(!sh("%s link add %s type veth peer name %s && %s link set %s netns %s && "
			"%s link set %s netns %s",
			ip_cmd, if_src, if_dst, ip_cmd, if_src, ns_src, ip_cmd, if_dst, ns_dst),
		    "a veth pair (needs the veth module)");
	TEST_ASSERT(!sh("%s -n %s addr add 10.99.%u.1/24 dev %s && %s -n %s link set %s up && "
			"%s -n %s link set lo up",
			ip_cmd, ns_src, net_id, if_src, ip_cmd, ns_src, if_src, ip_cmd, ns_src),
		    "source address");
	TEST_ASSERT(!sh("%s -n %s addr add 10.99.%u.2/24 dev %s && %s -n %s link set %s up && "
			"%s -n %s link set lo up",
			ip_cmd, ns_dst, net_id, if_dst, ip_cmd, ns_dst, if_dst, ip_cmd, ns_dst),
		    "destination address");
	TEST_ASSERT(!sh("%s -n %s qdisc add dev %s root tbf rate %s burst 256k latency 100ms && "
			"%s -n %s qdisc add dev %s root tbf rate %s burst 256k latency 100ms",
			tc_cmd, ns_src, if_src, rate, tc_cmd, ns_dst, if_dst, rate),
		    "tbf on the link (needs tc and the sch_tbf module)");
}

static pid_t flit_in(const char *ns, const char *log, const char *const *args)
{
	const char *argv[40] = {ip_cmd, "netns", "exec", ns, test_build_path("flit")};
	unsigned n = 5;

	for (; *args && n < 39; args++)
		argv[n++] = *args;
	argv[n] = NULL;
	return proc_spawn(log, argv);
}

/* extra: more options, NULL-terminated (or NULL) */
static pid_t dest_in(const char *log, unsigned port, const char *const *extra)
{
	static char addr[64];
	snprintf(addr, sizeof(addr), "tcp:10.99.%u.2:%u", net_id, port);
	const char *a[24] = {"--incoming",     addr, "--token-file", token, "--verify",
			     "--finish-after", "1",  "--timeout",    "300"};
	unsigned n = 9;
	for (; extra && *extra && n < 23; extra++)
		a[n++] = *extra;
	a[n] = NULL;
	pid_t pid = flit_in(ns_dst, log, a);
	TEST_ASSERT(proc_wait_log(log, "listening for a migration", 60),
		    "the destination listens (log %s)", log);
	return pid;
}

static double json_num(const char *text, const char *key)
{
	char k[64];
	snprintf(k, sizeof(k), "\"%s\":", key);
	const char *p = strstr(text, k);
	return p ? strtod(p + strlen(k), NULL) : -1;
}

static void check_dest_verified(pid_t d, const char *log)
{
	static char out[65536];
	int rc = proc_wait(d, 180);
	proc_read_file(log, out, sizeof(out));
	TEST_ASSERT(rc == 0, "destination exit %d, its log:\n%s", rc, out);
	TEST_ASSERT(strstr(out, "pages verified, 0 bad"), "destination verified: %s", out);
}

static void migrate_through_shaped_link(void)
{
	static char out[65536];
	char slog[300], dlog[300], addr[64];
	unsigned port = 7400;

	net_up("400mbit");
	snprintf(slog, sizeof(slog), "%s/s1.log", tmpdir);
	snprintf(dlog, sizeof(dlog), "%s/d1.log", tmpdir);
	snprintf(addr, sizeof(addr), "tcp:10.99.%u.2:%u", net_id, port);
	pid_t d = dest_in(dlog, port, NULL);
	const char *a[] = {"--guest",
			   "memcheck",
			   "--mem",
			   "64M",
			   "--vcpus",
			   "2",
			   "rounds=0",
			   "ws=1m",
			   "--migrate-to",
			   addr,
			   "--migrate-after",
			   "0.5",
			   "--token-file",
			   token,
			   "--timeout",
			   "300",
			   NULL};
	pid_t s = flit_in(ns_src, slog, a);
	int src = proc_wait(s, 180);
	proc_read_file(slog, out, sizeof(out));
	TEST_ASSERT(src == 0, "source exit %d, its log:\n%s", src, out);
	char *rep = strstr(out, "{\"mode\":\"precopy\"");
	TEST_ASSERT(rep && strstr(rep, "\"status\":\"completed\""), "report: %s", out);
	double mbps = json_num(rep, "throughput_mbps");
	double down = json_num(rep, "downtime_ms"), stall = json_num(rep, "guest_stall_ms");
	printf("  through the 400 Mbit/s link: %.0f Mbit/s, %.1f ms downtime, the guest saw a "
	       "%.1f ms stall\n",
	       mbps, down, stall);
	/* The guest was stopped at least from the source's pause to the
	 * destination's resume, which is the downtime less RESUMED's trip. */
	TEST_ASSERT(stall > 0 && stall + 5 >= down * 0.5, "guest_stall_ms %.1f, downtime %.1f",
		    stall, down);
	/* Not a speed target: loopback would be many times faster, so this
	 * shows the pages went through the shaped veth. */
	TEST_ASSERT(mbps > 0 && mbps < 400 * 1.1, "throughput %.0f Mbit/s", mbps);
	check_dest_verified(d, dlog);
}

/* flitctl(out, len, cmd, args..., NULL) */
#define flitctl(out, len, ...) flitctl_v(out, len, (const char *[]){__VA_ARGS__, NULL})
static int flitctl_v(char *out, size_t len, const char *const *args)
{
	char log[300];
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

static void link_down_then_retry(void)
{
	static char out[65536];
	char slog[300], dlog[300], d2log[300], addr[64];
	unsigned port = 7401;

	net_up("100mbit");
	snprintf(slog, sizeof(slog), "%s/s2.log", tmpdir);
	snprintf(dlog, sizeof(dlog), "%s/d2.log", tmpdir);
	snprintf(d2log, sizeof(d2log), "%s/d3.log", tmpdir);
	snprintf(sock, sizeof(sock), "%s/api.sock", tmpdir);
	snprintf(addr, sizeof(addr), "tcp:10.99.%u.2:%u", net_id, port);
	pid_t d = dest_in(dlog, port, NULL);
	const char *a[] = {"--guest",	"memcheck", "--mem", "64M", "--vcpus",	    "2",
			   "rounds=0",	"ws=1m",    "--api", sock,  "--token-file", token,
			   "--timeout", "300",	    NULL};
	pid_t s = flit_in(ns_src, slog, a);
	for (int i = 0; i < 100 && access(sock, F_OK); i++)
		usleep(100000);
	TEST_ASSERT(access(sock, F_OK) == 0, "the source's API");

	/* 64 MiB at 100 Mbit/s takes about 5 s: the link goes down inside. */
	TEST_ASSERT_EQ(flitctl(out, sizeof(out), "migrate", addr, "--no-wait"), 0);
	usleep(1500000);
	TEST_ASSERT(!sh("%s -n %s link set %s down", ip_cmd, ns_src, if_src), "link down");
	uint64_t t0 = now_ns();
	wait_ended(out, sizeof(out), 60);
	printf("  the source gave up %.1f s after the link went down\n",
	       (double)(now_ns() - t0) / 1e9);
	TEST_ASSERT(strstr(out, "\"status\":\"failed\""), "failed: %s", out);
	TEST_ASSERT(strstr(out, "\"error\":\""), "with a reason: %s", out);
	TEST_ASSERT_EQ(flitctl(out, sizeof(out), "status", NULL, NULL), 0);
	TEST_ASSERT(strstr(out, "\"state\":\"running\""), "the source guest runs on: %s", out);
	int drc = proc_wait(d, 120);
	proc_read_file(dlog, out, sizeof(out));
	TEST_ASSERT(drc == 76, "the first destination gave up (exit %d):\n%s", drc, out);

	/* The link is back: a new destination, a new migration. */
	TEST_ASSERT(!sh("%s -n %s link set %s up", ip_cmd, ns_src, if_src), "link up");
	snprintf(addr, sizeof(addr), "tcp:10.99.%u.2:%u", net_id, port + 1);
	pid_t d2 = dest_in(d2log, port + 1, NULL);
	TEST_ASSERT_EQ(flitctl(out, sizeof(out), "migrate", addr, NULL), 0);
	TEST_ASSERT(strstr(out, "\"status\":\"completed\""), "the retry completed: %s", out);
	int src = proc_wait(s, 60);
	proc_read_file(slog, out, sizeof(out));
	TEST_ASSERT(src == 0, "source exit %d:\n%s", src, out);
	check_dest_verified(d2, d2log);
}

/* Starts a post-copy through a 100 Mbit/s link (port), and takes the link
 * down after the switch; returns once the source waits to recover. */
static pid_t postcopy_break(unsigned port, const char *slog, const char *dlog,
			    const char *const *dx, const char *src_recover, pid_t *d)
{
	static char out[65536];
	char addr[64];

	net_up("100mbit");
	snprintf(addr, sizeof(addr), "tcp:10.99.%u.2:%u", net_id, port);
	*d = dest_in(dlog, port, dx);
	const char *a[] = {"--guest",	"memcheck", "--mem",	     "64M", "--vcpus",	    "2",
			   "rounds=0",	"ws=8m",    "--api",	     sock,  "--token-file", token,
			   "--timeout", "300",	    "--net-timeout", "2",   NULL,	    NULL,
			   NULL};
	if (src_recover) {
		a[16] = "--recover-timeout";
		a[17] = src_recover;
	}
	pid_t s = flit_in(ns_src, slog, a);
	for (int i = 0; i < 100 && access(sock, F_OK); i++)
		usleep(100000);
	TEST_ASSERT(access(sock, F_OK) == 0, "the source's API");
	TEST_ASSERT_EQ(flitctl(out, sizeof(out), "migrate-recover", NULL), 1);
	TEST_ASSERT(strstr(out, "no post-copy is waiting"), "refused with no migration: %s", out);
	/* 64 MiB at 100 Mbit/s: the push takes about 5 s; the link goes
	 * down inside it, after the switch. */
	TEST_ASSERT_EQ(flitctl(out, sizeof(out), "migrate", addr, "mode=postcopy", "--no-wait"), 0);
	usleep(1500000);
	flitctl(out, sizeof(out), "migrate-status", NULL);
	TEST_ASSERT(strstr(out, "\"phase\":\"postcopy\""), "in post-copy: %.300s", out);
	TEST_ASSERT_EQ(flitctl(out, sizeof(out), "migrate-recover", NULL), 1);
	TEST_ASSERT(strstr(out, "no post-copy is waiting"), "refused while it runs: %s", out);
	TEST_ASSERT(!sh("%s -n %s link set %s down", ip_cmd, ns_src, if_src), "link down");
	uint64_t t0 = now_ns();
	bool paused = false;
	for (int i = 0; i < 300 && !paused; i++) {
		flitctl(out, sizeof(out), "migrate-status", NULL);
		paused = strstr(out, "\"phase\":\"postcopy-paused\"") != NULL;
		if (!paused)
			usleep(100000);
	}
	TEST_ASSERT(paused, "the source waits to recover: %.300s", out);
	TEST_ASSERT(strstr(out, "\"status\":\"active\""), "still active: %.300s", out);
	printf("  the source paused post-copy %.1f s after the link went down\n",
	       (double)(now_ns() - t0) / 1e9);
	TEST_ASSERT(proc_wait_log(dlog, "waiting up to", 30), "the destination waits too");
	return s;
}

/* The link goes down after the post-copy switch, and comes back. backing:
 * the destination's RAM (anonymous: MISSING faults; memfd: MINOR faults,
 * pages written through a second mapping). */
static void link_down_recover(const char *backing, unsigned port)
{
	static char out[65536];
	char slog[300], dlog[300];
	const char *dx[] = {"--net-timeout", "2", "--mem-backend", backing, NULL};
	pid_t d;

	snprintf(slog, sizeof(slog), "%s/s4-%s.log", tmpdir, backing);
	snprintf(dlog, sizeof(dlog), "%s/d4-%s.log", tmpdir, backing);
	snprintf(sock, sizeof(sock), "%s/api4-%s.sock", tmpdir, backing);
	pid_t s = postcopy_break(port, slog, dlog, dx, NULL, &d);
	/* Down for a while longer: the source's own attempts fail meanwhile. */
	usleep(2500000);
	TEST_ASSERT(!sh("%s -n %s link set %s up", ip_cmd, ns_src, if_src), "link up");
	TEST_ASSERT_EQ(flitctl(out, sizeof(out), "migrate-recover", NULL), 0);
	wait_ended(out, sizeof(out), 90);
	TEST_ASSERT(strstr(out, "\"status\":\"completed\""), "completed: %.600s", out);
	TEST_ASSERT(json_num(out, "recoveries") >= 1, "recovered: %.600s", out);
	printf("  recovered after %.1f s of waiting; post-copy took %.0f ms in all\n",
	       json_num(out, "recover_wait_ms") / 1e3, json_num(out, "postcopy_ms"));
	int src = proc_wait(s, 60);
	proc_read_file(slog, out, sizeof(out));
	TEST_ASSERT(src == 0, "source exit %d:\n%s", src, out);
	check_dest_verified(d, dlog);
	proc_read_file(dlog, out, sizeof(out));
	TEST_ASSERT(strstr(out, "post-copy recovered"), "the destination says so: %s", out);
}

static void postcopy_link_down_recover(void)
{
	link_down_recover("anon", 7403);
}

static void postcopy_link_down_recover_memfd(void)
{
	link_down_recover("memfd", 7405);
}

/* After a post-copy break that was not mended: both sides exit 76, the
 * source saying the guest was lost, the destination why (dst_why). */
static void both_lost(pid_t s, pid_t d, const char *slog, const char *dlog, const char *dst_why)
{
	static char out[65536];

	int src = proc_wait(s, 30);
	proc_read_file(slog, out, sizeof(out));
	TEST_ASSERT(src == 76 && strstr(out, "the guest was lost"), "source exit %d:\n%s", src,
		    out);
	int drc = proc_wait(d, 60);
	proc_read_file(dlog, out, sizeof(out));
	TEST_ASSERT(drc == 76 && strstr(out, dst_why), "destination exit %d:\n%s", drc, out);
}

/* The same break, then the source gives up (cancel) instead. */
static void postcopy_link_down_cancel(void)
{
	static char out[65536];
	char slog[300], dlog[300];
	const char *dx[] = {"--net-timeout", "2", "--recover-timeout", "4", NULL};
	pid_t d;

	snprintf(slog, sizeof(slog), "%s/s5.log", tmpdir);
	snprintf(dlog, sizeof(dlog), "%s/d5.log", tmpdir);
	snprintf(sock, sizeof(sock), "%s/api5.sock", tmpdir);
	pid_t s = postcopy_break(7404, slog, dlog, dx, NULL, &d);
	TEST_ASSERT_EQ(flitctl(out, sizeof(out), "migrate-cancel", NULL), 0);
	wait_ended(out, sizeof(out), 10);
	TEST_ASSERT(strstr(out, "\"status\":\"lost\""), "lost: %.600s", out);
	TEST_ASSERT(strstr(out, "recovery cancelled"), "why: %.600s", out);
	both_lost(s, d, slog, dlog, "the source did not reconnect within 4 s");
}

/* The same break, and the link stays down: each side gives up after its
 * --recover-timeout, once, with the reason. */
static void postcopy_link_down_no_recovery(void)
{
	static char out[65536];
	char slog[300], dlog[300];
	const char *dx[] = {"--net-timeout", "2", "--recover-timeout", "3", NULL};
	pid_t d;

	snprintf(slog, sizeof(slog), "%s/s6.log", tmpdir);
	snprintf(dlog, sizeof(dlog), "%s/d6.log", tmpdir);
	snprintf(sock, sizeof(sock), "%s/api6.sock", tmpdir);
	pid_t s = postcopy_break(7406, slog, dlog, dx, "3", &d);
	uint64_t t0 = now_ns();
	wait_ended(out, sizeof(out), 30);
	printf("  the source gave up %.1f s after it paused\n", (double)(now_ns() - t0) / 1e9);
	TEST_ASSERT(strstr(out, "\"status\":\"lost\""), "lost: %.600s", out);
	TEST_ASSERT(strstr(out, "no recovery within 3 s"), "why: %.600s", out);
	both_lost(s, d, slog, dlog, "the source did not reconnect within 3 s");
}

int main(int argc, char **argv)
{
	static const struct test_case cases[] = {
	    TEST_CASE(migrate_through_shaped_link), TEST_CASE(link_down_then_retry),
	    TEST_CASE(postcopy_link_down_recover),  TEST_CASE(postcopy_link_down_recover_memfd),
	    TEST_CASE(postcopy_link_down_cancel),   TEST_CASE(postcopy_link_down_no_recovery),
	};
	if (!test_have_dev_kvm())
		return 77;
	TEST_ASSERT(mkdtemp(tmpdir) != NULL, "mkdtemp");
	snprintf(token, sizeof(token), "%s/token", tmpdir);
	int fd = open(token, O_WRONLY | O_CREAT, 0600);
	if (write(fd, "net-test-token-0123456789\n", 26) != 26)
		return 1;
	close(fd);
	/* iproute2's, not a busybox applet of the same name (no netns). */
	ip_cmd = access("/usr/sbin/ip", X_OK) ? "ip" : "/usr/sbin/ip";
	tc_cmd = access("/usr/sbin/tc", X_OK) ? "tc" : "/usr/sbin/tc";
	net_id = (unsigned)getpid() % 200 + 20;
	snprintf(ns_src, sizeof(ns_src), "flit-src-%u", (unsigned)getpid());
	snprintf(ns_dst, sizeof(ns_dst), "flit-dst-%u", (unsigned)getpid());
	snprintf(if_src, sizeof(if_src), "fs%u", (unsigned)getpid());
	snprintf(if_dst, sizeof(if_dst), "fd%u", (unsigned)getpid());
	int r = test_main(argc, argv, cases, ARRAY_SIZE(cases));
	net_down();
	return r;
}
