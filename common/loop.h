/* SPDX-License-Identifier: MIT */
/*
 * An io_uring event loop: one ring, one thread. Whoever owns the loop queues
 * operations (any io_uring opcode: poll, timeout, read of an eventfd, send,
 * accept, ...) through loop_sqe and gets each completion as a call of the
 * operation's callback, from loop_run_once / loop_run on the loop's thread.
 *
 * user_data layout: every SQE queued through loop_sqe carries the address of
 * its struct loop_op (8-byte aligned). user_data 0 is the loop's own (the
 * wait timeout of loop_run_once, cancels); their completions are dropped.
 * Nothing else is ever put there, so a CQE always maps back to its op.
 *
 * Completions are taken in batches: every CQE ready when the loop wakes is
 * dispatched before the CQ head moves once. A callback may queue new
 * operations; they go to the kernel with the next submit (before the loop
 * sleeps again). An op may have several SQEs in flight (op->inflight counts
 * the CQEs still due, multishot and zero-copy notification CQEs included).
 */
#ifndef FLIT_COMMON_LOOP_H
#define FLIT_COMMON_LOOP_H

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

struct loop;
struct loop_op;

typedef void loop_cb(struct loop *l, struct loop_op *op, const struct io_uring_cqe *cqe);

struct loop_op {
	loop_cb *cb;
	unsigned inflight; /* CQEs still due (the loop keeps it) */
};

struct loop {
	struct io_uring ring;
	bool stop;
	/* Called before the loop sleeps in the kernel, e.g. to flush queued
	 * output in one batch. */
	void (*before_sleep)(struct loop *l, void *opaque);
	void *opaque;
	uint64_t cqes; /* completions dispatched, for statistics */
};

/* 0 or -errno (-ENOSYS: no io_uring in this kernel, -EPERM: disabled). */
int loop_init(struct loop *l, unsigned entries);
void loop_fini(struct loop *l);

/* An SQE for op, its user_data set; submits first when the SQ is full.
 * NULL only if the ring is broken (submit failed). */
struct io_uring_sqe *loop_sqe(struct loop *l, struct loop_op *op);

/* Hands queued SQEs to the kernel: count submitted or -errno. */
int loop_submit(struct loop *l);

/* Submits, then waits up to timeout_ns (< 0: forever, 0: not at all) for
 * completions and dispatches every one that is ready. Returns the number
 * dispatched, or -errno (-ETIME is not an error: it returns 0). */
int loop_run_once(struct loop *l, int64_t timeout_ns);

/* loop_run_once until loop_stop; 0 or the first -errno. */
int loop_run(struct loop *l);
static inline void loop_stop(struct loop *l)
{
	l->stop = true;
}

/* A relative timer: op's callback gets -ETIME when it fires (or -ECANCELED).
 * ts must stay valid until the next submit. */
int loop_timer(struct loop *l, struct loop_op *op, struct __kernel_timespec *ts);

/* Poll fd once for events; the callback gets the revents or -errno. */
int loop_poll(struct loop *l, struct loop_op *op, int fd, unsigned events);

/* Asks the kernel to cancel every request of op; their CQEs still come. */
int loop_cancel(struct loop *l, struct loop_op *op);

/* Runs the loop until op has nothing in flight (after loop_cancel, say),
 * at most timeout_ns; -ETIMEDOUT if it still has. */
int loop_drain(struct loop *l, struct loop_op *op, int64_t timeout_ns);

#endif
