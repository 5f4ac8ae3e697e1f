// SPDX-License-Identifier: MIT
/* The io_uring event loop: timers, polls, batched completions, cancel, stop. */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/loop.h"
#include "common/util.h"
#include "tests/lib/test.h"

struct rec_op {
	struct loop_op op;
	int calls;
	int res;
	unsigned flags;
	bool stop_loop;
};

static void record(struct loop *l, struct loop_op *op, const struct io_uring_cqe *cqe)
{
	struct rec_op *r = (struct rec_op *)op;

	r->calls++;
	r->res = cqe->res;
	r->flags = cqe->flags;
	if (r->stop_loop)
		loop_stop(l);
}

static void init_loop(struct loop *l)
{
	int r = loop_init(l, 16);

	TEST_ASSERT(r == 0, "loop_init: %s", strerror(-r));
}

static void timer_fires_once_not_early(void)
{
	struct loop l;
	struct rec_op t = {.op.cb = record};
	struct __kernel_timespec ts = {.tv_nsec = 20000000};

	init_loop(&l);
	uint64_t t0 = now_ns();
	TEST_ASSERT_EQ(loop_timer(&l, &t.op, &ts), 0);
	TEST_ASSERT_EQ(t.op.inflight, 1);
	while (!t.calls)
		TEST_ASSERT(loop_run_once(&l, 1000000000) >= 0, "loop_run_once failed");
	TEST_ASSERT_EQ(t.calls, 1);
	TEST_ASSERT_EQ(t.res, -ETIME);
	TEST_ASSERT_EQ(t.op.inflight, 0);
	TEST_ASSERT(now_ns() - t0 >= 15000000, "a 20 ms timer fired after %llu ns",
		    (unsigned long long)(now_ns() - t0));
	/* Nothing more comes. */
	TEST_ASSERT_EQ(loop_run_once(&l, 10000000), 0);
	TEST_ASSERT_EQ(t.calls, 1);
	loop_fini(&l);
}

/* Three ready eventfds: one wake-up dispatches all three. */
static void completions_come_in_one_batch(void)
{
	struct loop l;
	struct rec_op p[3];
	int fd[3];
	uint64_t one = 1;

	init_loop(&l);
	for (int i = 0; i < 3; i++) {
		fd[i] = eventfd(0, EFD_CLOEXEC);
		TEST_ASSERT(fd[i] >= 0, "eventfd");
		p[i] = (struct rec_op){.op.cb = record};
		TEST_ASSERT_EQ(loop_poll(&l, &p[i].op, fd[i], POLLIN), 0);
	}
	TEST_ASSERT_EQ(loop_submit(&l), 3);
	/* Not ready yet: the poll waits. */
	TEST_ASSERT_EQ(loop_run_once(&l, 0), 0);
	for (int i = 0; i < 3; i++)
		TEST_ASSERT_EQ(write(fd[i], &one, sizeof(one)), (ssize_t)sizeof(one));
	int n = 0;
	while (n < 3) {
		int r = loop_run_once(&l, 1000000000);
		TEST_ASSERT(r > 0, "loop_run_once: %d", r);
		n += r;
	}
	TEST_ASSERT_EQ(n, 3);
	for (int i = 0; i < 3; i++) {
		TEST_ASSERT_EQ(p[i].calls, 1);
		TEST_ASSERT(p[i].res & POLLIN, "poll result %d", p[i].res);
		close(fd[i]);
	}
	TEST_ASSERT(l.cqes >= 3, "cqes %llu", (unsigned long long)l.cqes);
	loop_fini(&l);
}

/* A poll that never fires is cancelled; drain waits for its last CQE. */
static void cancel_then_drain(void)
{
	struct loop l;
	struct rec_op p = {.op.cb = record};
	int fds[2];

	init_loop(&l);
	TEST_ASSERT_EQ(pipe(fds), 0);
	TEST_ASSERT_EQ(loop_poll(&l, &p.op, fds[0], POLLIN), 0);
	TEST_ASSERT_EQ(loop_submit(&l), 1);
	TEST_ASSERT_EQ(loop_drain(&l, &p.op, 20000000), -ETIMEDOUT);
	TEST_ASSERT_EQ(loop_cancel(&l, &p.op), 0);
	TEST_ASSERT_EQ(loop_drain(&l, &p.op, 1000000000), 0);
	TEST_ASSERT_EQ(p.calls, 1);
	TEST_ASSERT_EQ(p.res, -ECANCELED);
	close(fds[0]);
	close(fds[1]);
	loop_fini(&l);
}

static void count_sleep(struct loop *l, void *opaque)
{
	(void)l;
	(*(int *)opaque)++;
}

/* loop_run ends when a callback stops it; the hook runs before each sleep. */
static void run_until_stopped(void)
{
	struct loop l;
	struct rec_op a = {.op.cb = record}, b = {.op.cb = record, .stop_loop = true};
	struct __kernel_timespec ta = {.tv_nsec = 1000000}, tb = {.tv_nsec = 30000000};
	int sleeps = 0;

	init_loop(&l);
	l.before_sleep = count_sleep;
	l.opaque = &sleeps;
	TEST_ASSERT_EQ(loop_timer(&l, &a.op, &ta), 0);
	TEST_ASSERT_EQ(loop_timer(&l, &b.op, &tb), 0);
	TEST_ASSERT_EQ(loop_run(&l), 0);
	TEST_ASSERT_EQ(a.calls, 1);
	TEST_ASSERT_EQ(b.calls, 1);
	TEST_ASSERT(sleeps >= 1, "before_sleep never ran");
	loop_fini(&l);
}

int main(int argc, char **argv)
{
	static const struct test_case cases[] = {
	    TEST_CASE(timer_fires_once_not_early),
	    TEST_CASE(completions_come_in_one_batch),
	    TEST_CASE(cancel_then_drain),
	    TEST_CASE(run_until_stopped),
	};
	return test_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]));
}
