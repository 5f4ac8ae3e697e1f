/* SPDX-License-Identifier: MIT */
/*
 * A small test harness: TEST_ASSERT prints the expression, file and line
 * and fails the test; a test program is a list of cases run in order, and
 * ends with "N passed, N failed". A case that lacks a resource calls
 * test_skip(): the program then exits 77 (CTest's SKIP_RETURN_CODE), which
 * the project's test command counts as a failure for KVM tests.
 */
#ifndef FLIT_TESTS_TEST_H
#define FLIT_TESTS_TEST_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#define TEST_ASSERT(cond, ...)                                                                 \
	do {                                                                                   \
		if (!(cond)) {                                                                 \
			fprintf(stderr, "%s:%d: assertion failed: %s\n  ", __FILE__, __LINE__, \
				#cond);                                                        \
			fprintf(stderr, __VA_ARGS__);                                          \
			fprintf(stderr, "\n");                                                 \
			test_fail_current();                                                   \
		}                                                                              \
	} while (0)

#define TEST_ASSERT_EQ(a, b) \
	TEST_ASSERT((a) == (b), "%s = %lld, %s = %lld", #a, (long long)(a), #b, (long long)(b))

struct test_case {
	const char *name;
	void (*fn)(void);
};

#define TEST_CASE(fn)   \
	{               \
#fn, fn \
	}

/* Runs the cases (all, or those named in argv), prints a line per case and
 * the closing count; returns the process exit status. */
int test_main(int argc, char **argv, const struct test_case *cases, unsigned n);

/* Ends the current case as failed (longjmp back to the runner). */
void test_fail_current(void) __attribute__((noreturn));
/* Ends the current case as skipped, with a reason. */
void test_skip(const char *why) __attribute__((noreturn));

/* For test programs that run other programs under KVM: true if /dev/kvm
 * opens; otherwise prints why and the skip line (the caller exits 77). */
bool test_have_dev_kvm(void);

/* A path in the build tree (FLIT_BUILD_DIR is compiled in). */
const char *test_build_path(const char *rel);

#endif
