// SPDX-License-Identifier: MIT
#include "test.h"

#include <setjmp.h>
#include <stdbool.h>
#include <string.h>

#include "common/util.h"

static jmp_buf case_jmp;
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

/* 0 passed, 1 failed, 2 skipped. */
static int run_case(const struct test_case *c)
{
	int r = setjmp(case_jmp);

	if (r == 0)
		c->fn();
	return r;
}

int test_main(int argc, char **argv, const struct test_case *cases, unsigned n)
{
	unsigned passed = 0, failed = 0, skipped = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (unsigned i = 0; i < n; i++) {
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
