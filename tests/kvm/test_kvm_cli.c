// SPDX-License-Identifier: MIT
/*
 * The flit executable under real KVM: the exit status is the guest's, a
 * crash and a timeout have their own documented codes, and the host-side
 * check (--verify) turns a corrupted page into a failure.
 */
#include <fcntl.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util.h"
#include "tests/lib/test.h"

/* Runs flit with args; returns its exit status, output in out. */
static int run_flit(char *out, size_t len, const char *const *args)
{
	char path[] = "/tmp/flit-cli-XXXXXX";
	int fd = mkstemp(path), status;
	const char *argv[32] = {test_build_path("flit")};
	unsigned n = 1;

	TEST_ASSERT(fd >= 0, "mkstemp");
	for (; args[n - 1] && n < 31; n++)
		argv[n] = args[n - 1];
	argv[n] = NULL;
	pid_t pid = fork();
	if (pid == 0) {
		dup2(fd, 1);
		dup2(fd, 2);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	waitpid(pid, &status, 0);
	ssize_t got = pread(fd, out, len - 1, 0);
	out[got > 0 ? got : 0] = 0;
	close(fd);
	unlink(path);
	printf("  flit %s ... -> %d\n", args[0] ? args[1] : "", WEXITSTATUS(status));
	TEST_ASSERT(WIFEXITED(status), "flit died of signal %d:\n%s", WTERMSIG(status), out);
	return WEXITSTATUS(status);
}

static char out[65536];

static void hello_exits_zero(void)
{
	const char *a[] = {"--guest", "hello", "--vcpus", "2", "--mem", "32M", NULL};
	TEST_ASSERT_EQ(run_flit(out, sizeof(out), a), 0);
	TEST_ASSERT(strstr(out, "guest: hello from vcpu 1 of 2"), "%s", out);
}

static void memcheck_verify(void)
{
	const char *a[] = {"--guest", "memcheck", "--mem",    "64M", "--vcpus",
			   "2",	      "--verify", "rounds=3", NULL};
	TEST_ASSERT_EQ(run_flit(out, sizeof(out), a), 0);
	TEST_ASSERT(strstr(out, "pages verified, 0 bad"), "%s", out);
}

static void memcheck_corrupt_is_status_1(void)
{
	const char *a[] = {"--guest", "memcheck", "--mem",	   "64M",  "--verify",
			   "corrupt", "rounds=2", "--dirty-track", "ring", NULL};
	TEST_ASSERT_EQ(run_flit(out, sizeof(out), a), 1);
	TEST_ASSERT(strstr(out, "1 bad"), "%s", out);
}

static void crash_is_70(void)
{
	const char *a[] = {"--guest", "hello", "--mem", "16M", "crash", NULL};
	TEST_ASSERT_EQ(run_flit(out, sizeof(out), a), 70);
	TEST_ASSERT(strstr(out, "guest exception #UD"), "%s", out);
}

static void timeout_is_75(void)
{
	const char *a[] = {"--guest", "memtouch", "--mem", "16M", "--timeout", "1", NULL};
	TEST_ASSERT_EQ(run_flit(out, sizeof(out), a), 75);
	TEST_ASSERT(strstr(out, "still running after 1000 ms"), "%s", out);
}

int main(int argc, char **argv)
{
	static const struct test_case cases[] = {
	    TEST_CASE(hello_exits_zero),
	    TEST_CASE(memcheck_verify),
	    TEST_CASE(memcheck_corrupt_is_status_1),
	    TEST_CASE(crash_is_70),
	    TEST_CASE(timeout_is_75),
	};
	if (!test_have_dev_kvm())
		return 77;
	return test_main(argc, argv, cases, ARRAY_SIZE(cases));
}
