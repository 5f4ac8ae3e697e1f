// SPDX-License-Identifier: MIT
#include "test.h"

#include "common/log.h"

#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <unistd.h>
#include <stdbool.h>
#include <string.h>

#include "common/util.h"

static jmp_buf case_jmp;
static unsigned test_case_timeout_s = 240;

static void read_small(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY);
	ssize_t n = fd >= 0 ? read(fd, buf, len - 1) : -1;

	if (fd >= 0)
		close(fd);
	buf[n > 0 ? n : 0] = 0;
	for (char *p = buf; *p; p++)
		if (*p == '\n')
			*p = 0;
}
static const char *skip_reason;

void test_fail_current(void)
{
	longjmp(case_jmp, 1);
}

void test_skip(const char *why)
{
	skip_reason = why;
	longjmp(case_jmp, 2);
}

const char *test_build_path(const char *rel)
{
	static char buf[4][1024];
	static unsigned next;
	char *b = buf[next++ % 4];

	snprintf(b, sizeof(buf[0]), "%s/%s", FLIT_BUILD_DIR, rel);
	return b;
}

static const char *current_case;

/* A case that hangs is a failure with a name, not a silent CI timeout: show
 * where every thread is, then exit. */
static void on_case_timeout(int sig)
{
	char line[160];
	int n = snprintf(line, sizeof(line), "\nFAILED  %s: no result after %u s; threads:\n",
			 current_case ? current_case : "?", test_case_timeout_s);
	ssize_t w = write(2, line, (size_t)n);
	(void)sig;
	(void)w;
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	while (d && (e = readdir(d))) {
		char path[300], buf[200], comm[32] = "", wchan[64] = "", sys[128] = "";
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
		read_small(path, comm, sizeof(comm));
		snprintf(path, sizeof(path), "/proc/self/task/%s/wchan", e->d_name);
		read_small(path, wchan, sizeof(wchan));
		snprintf(path, sizeof(path), "/proc/self/task/%s/syscall", e->d_name);
		read_small(path, sys, sizeof(sys));
		n = snprintf(buf, sizeof(buf), "  %s %s wchan=%s syscall=%.40s\n", e->d_name, comm,
			     wchan, sys);
		w = write(2, buf, (size_t)n);
	}
	if (d)
		closedir(d);
	_exit(1);
}

/* 0 passed, 1 failed, 2 skipped. */
static int run_case(const struct test_case *c)
{
	int r = setjmp(case_jmp);

	if (r == 0) {
		current_case = c->name;
		alarm(test_case_timeout_s);
		c->fn();
	}
	alarm(0);
	return r;
}

int test_main(int argc, char **argv, const struct test_case *cases, unsigned n)
{
	unsigned passed = 0, failed = 0, skipped = 0;

	log_init_from_env(); /* FLIT_LOG=debug for the VMM's own story */
	const char *t = getenv("FLIT_TEST_CASE_TIMEOUT");
	if (t && atoi(t) > 0)
		test_case_timeout_s = (unsigned)atoi(t);
	/* FLIT_TEST_REPEAT=N runs the chosen cases N times (stress runs). */
	const char *r = getenv("FLIT_TEST_REPEAT");
	unsigned repeat = r && atoi(r) > 0 ? (unsigned)atoi(r) : 1;
	signal(SIGALRM, on_case_timeout);
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (unsigned k = 0; k < n * repeat; k++) {
		unsigned i = k % n;
		bool wanted = argc < 2;
		for (int a = 1; a < argc; a++)
			wanted |= !strcmp(argv[a], cases[i].name);
		if (!wanted)
			continue;
		uint64_t t0 = now_ns();
		switch (run_case(&cases[i])) {
		case 0:
			passed++;
			printf("ok      %s (%.2f s)\n", cases[i].name,
			       (double)(now_ns() - t0) / 1e9);
			break;
		case 1:
			failed++;
			printf("FAILED  %s\n", cases[i].name);
			break;
		default:
			skipped++;
			printf("SKIPPED %s: %s\n", cases[i].name, skip_reason);
			break;
		}
		fflush(stdout);
	}
	if (skipped)
		printf("%u passed, %u failed, %u skipped\n", passed, failed, skipped);
	else
		printf("%u passed, %u failed\n", passed, failed);
	if (failed)
		return 1;
	return skipped ? 77 : 0;
}

bool test_have_dev_kvm(void)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);

	if (fd < 0) {
		printf("no /dev/kvm here: run through tools/flit-lab\n0 passed, 0 failed, 1 "
		       "skipped\n");
		return false;
	}
	close(fd);
	return true;
}
