/* SPDX-License-Identifier: MIT */
/* 8250 UART at COM1 (0x3f8), output only: guest lines go to the VMM's log
 * (or to a sink set by the embedding program). */
#ifndef FLIT_VMM_DEV_SERIAL_H
#define FLIT_VMM_DEV_SERIAL_H

#include <pthread.h>
#include <stdint.h>

#include "dev.h"

#define SERIAL_LINE_MAX	   256
#define SERIAL_MAX_WRITERS 32

/* Plain state, saved and restored as is. */
struct serial_regs {
	uint8_t ier, lcr, mcr, scr, dll, dlm;
	uint8_t pad[2];
};

struct serial {
	pthread_mutex_t lock;
	struct serial_regs regs; /* protected by lock */
	/* One line buffer per vCPU, so lines written by several vCPUs at once
	 * come out whole. Protected by lock. */
	char line[SERIAL_MAX_WRITERS][SERIAL_LINE_MAX];
	unsigned len[SERIAL_MAX_WRITERS];
	/* Where finished lines go; default prints "guest: <line>" to stdout,
	 * NULL discards them. */
	void (*sink)(void *opaque, const char *line);
	void *sink_opaque;
};

extern const struct dev_ops serial_ops;

void serial_init(struct serial *s);
void serial_destroy(struct serial *s);
/* Write out partial lines, if any. */
void serial_flush(struct serial *s);

#endif
