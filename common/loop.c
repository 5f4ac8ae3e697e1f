// SPDX-License-Identifier: MIT
#include "loop.h"

#include <errno.h>
#include <string.h>

#include "util.h"

int loop_init(struct loop *l, unsigned entries)
{
	memset(l, 0, sizeof(*l));
	/* SUBMIT_ALL: one bad SQE does not leave the rest of a batch behind. */
	int r = io_uring_queue_init(entries, &l->ring, IORING_SETUP_SUBMIT_ALL);

	if (r == -EINVAL) /* before 5.18 */
		r = io_uring_queue_init(entries, &l->ring, 0);
	return r;
}

void loop_fini(struct loop *l)
{
	if (l->ring.ring_fd > 0)
		io_uring_queue_exit(&l->ring);
	l->ring.ring_fd = -1;
}

struct io_uring_sqe *loop_sqe(struct loop *l, struct loop_op *op)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);

	if (!sqe) {
		if (io_uring_submit(&l->ring) < 0)
			return NULL;
		sqe = io_uring_get_sqe(&l->ring);
		if (!sqe)
			return NULL;
	}
	io_uring_sqe_set_data(sqe, op);
	if (op)
		op->inflight++;
	return sqe;
}

int loop_submit(struct loop *l)
{
	int r;

	do
		r = io_uring_submit(&l->ring);
	while (r == -EINTR);
	return r;
}

static unsigned dispatch(struct loop *l)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;

	io_uring_for_each_cqe(&l->ring, head, cqe)
	{
		struct loop_op *op = io_uring_cqe_get_data(cqe);
		n++;
		if (!op || cqe->user_data == LIBURING_UDATA_TIMEOUT)
			continue;
		/* The last CQE of a request: a plain one, or the final CQE of
		 * a multishot or zero-copy send (no F_MORE). */
		if (!(cqe->flags & IORING_CQE_F_MORE) && op->inflight)
			op->inflight--;
		if (op->cb)
			op->cb(l, op, cqe);
	}
	io_uring_cq_advance(&l->ring, n);
	l->cqes += n;
	return n;
}

int loop_run_once(struct loop *l, int64_t timeout_ns)
{
	struct io_uring_cqe *cqe = NULL;
	int r;

	if (l->before_sleep)
		l->before_sleep(l, l->opaque);
	if (io_uring_cq_ready(&l->ring) || timeout_ns == 0) {
		r = loop_submit(l);
		if (r < 0)
			return r;
		return (int)dispatch(l);
	}
	if (timeout_ns < 0) {
		r = io_uring_submit_and_wait(&l->ring, 1);
	} else {
		struct __kernel_timespec ts = {.tv_sec = timeout_ns / 1000000000,
					       .tv_nsec = timeout_ns % 1000000000};
		r = io_uring_submit_and_wait_timeout(&l->ring, &cqe, 1, &ts, NULL);
	}
	if (r < 0 && r != -ETIME && r != -EINTR)
		return r;
	return (int)dispatch(l);
}

int loop_run(struct loop *l)
{
	l->stop = false;
	while (!l->stop) {
		int r = loop_run_once(l, -1);
		if (r < 0)
			return r;
	}
	return 0;
}

int loop_timer(struct loop *l, struct loop_op *op, struct __kernel_timespec *ts)
{
	struct io_uring_sqe *sqe = loop_sqe(l, op);

	if (!sqe)
		return -EBUSY;
	io_uring_prep_timeout(sqe, ts, 0, 0);
	return 0;
}

int loop_poll(struct loop *l, struct loop_op *op, int fd, unsigned events)
{
	struct io_uring_sqe *sqe = loop_sqe(l, op);

	if (!sqe)
		return -EBUSY;
	io_uring_prep_poll_add(sqe, fd, events);
	return 0;
}

int loop_cancel(struct loop *l, struct loop_op *op)
{
	struct io_uring_sqe *sqe = loop_sqe(l, NULL);

	if (!sqe)
		return -EBUSY;
	io_uring_prep_cancel(sqe, op, IORING_ASYNC_CANCEL_ALL);
	return loop_submit(l) < 0 ? -EIO : 0;
}

int loop_drain(struct loop *l, struct loop_op *op, int64_t timeout_ns)
{
	uint64_t end = now_ns() + (uint64_t)timeout_ns;

	while (op->inflight) {
		uint64_t now = now_ns();
		if (now >= end)
			return -ETIMEDOUT;
		int r = loop_run_once(l, (int64_t)(end - now));
		if (r < 0)
			return r;
	}
	return 0;
}
