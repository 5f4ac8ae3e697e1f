// SPDX-License-Identifier: MIT
#include "serial.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "vmm/vcpu.h"

#define UART_RBR	0
#define UART_IER	1
#define UART_IIR	2
#define UART_LCR	3
#define UART_MCR	4
#define UART_LSR	5
#define UART_MSR	6
#define UART_SCR	7
#define UART_LCR_DLAB	0x80
#define UART_LSR_THRE	0x20
#define UART_LSR_TEMT	0x40
#define UART_IIR_NO_INT 0x01

static void serial_default_sink(void *opaque, const char *line)
{
	(void)opaque;
	printf("guest: %s\n", line);
	fflush(stdout);
}

void serial_init(struct serial *s)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
	s->sink = serial_default_sink;
}

void serial_destroy(struct serial *s)
{
	serial_flush(s);
	pthread_mutex_destroy(&s->lock);
}

/* Called with s->lock held. */
static void serial_emit(struct serial *s, unsigned w)
{
	s->line[w][s->len[w]] = 0;
	if (s->sink)
		s->sink(s->sink_opaque, s->line[w]);
	s->len[w] = 0;
}

void serial_flush(struct serial *s)
{
	pthread_mutex_lock(&s->lock);
	for (unsigned w = 0; w < SERIAL_MAX_WRITERS; w++)
		if (s->len[w])
			serial_emit(s, w);
	pthread_mutex_unlock(&s->lock);
}

static void serial_putc(struct serial *s, unsigned w, uint8_t c)
{
	if (c == '\n') {
		serial_emit(s, w);
		return;
	}
	if (c == '\r')
		return;
	/* Keep the log printable whatever the guest sends. */
	s->line[w][s->len[w]++] = (c >= 0x20 && c < 0x7f) || c == '\t' ? (char)c : '?';
	if (s->len[w] == SERIAL_LINE_MAX - 1)
		serial_emit(s, w);
}

static void serial_pio(void *dev, struct vcpu *vcpu, uint16_t off, bool out, uint8_t size,
		       uint8_t *data)
{
	struct serial *s = dev;
	unsigned w = vcpu ? vcpu->index % SERIAL_MAX_WRITERS : 0;
	bool dlab;

	if (size != 1) {
		if (!out)
			memset(data, 0xff, size);
		return;
	}
	pthread_mutex_lock(&s->lock);
	dlab = s->regs.lcr & UART_LCR_DLAB;
	if (out) {
		switch (off) {
		case UART_RBR:
			if (dlab)
				s->regs.dll = *data;
			else
				serial_putc(s, w, *data);
			break;
		case UART_IER:
			if (dlab)
				s->regs.dlm = *data;
			else
				s->regs.ier = *data & 0x0f;
			break;
		case UART_LCR:
			s->regs.lcr = *data;
			break;
		case UART_MCR:
			s->regs.mcr = *data & 0x1f;
			break;
		case UART_SCR:
			s->regs.scr = *data;
			break;
		default:
			break;
		}
	} else {
		switch (off) {
		case UART_RBR:
			*data = dlab ? s->regs.dll : 0;
			break;
		case UART_IER:
			*data = dlab ? s->regs.dlm : s->regs.ier;
			break;
		case UART_IIR:
			*data = UART_IIR_NO_INT;
			break;
		case UART_LCR:
			*data = s->regs.lcr;
			break;
		case UART_MCR:
			*data = s->regs.mcr;
			break;
		case UART_LSR:
			*data = UART_LSR_THRE | UART_LSR_TEMT; /* always ready */
			break;
		case UART_MSR:
			*data = 0xb0; /* DCD, DSR, CTS */
			break;
		case UART_SCR:
			*data = s->regs.scr;
			break;
		default:
			*data = 0;
			break;
		}
	}
	pthread_mutex_unlock(&s->lock);
}

static void serial_save(void *dev, void *state)
{
	struct serial *s = dev;

	pthread_mutex_lock(&s->lock);
	memcpy(state, &s->regs, sizeof(s->regs));
	pthread_mutex_unlock(&s->lock);
}

static int serial_restore(void *dev, const void *state)
{
	struct serial *s = dev;
	struct serial_regs r;

	memcpy(&r, state, sizeof(r));
	if (r.ier & 0xf0 || r.mcr & 0xe0)
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	s->regs = r;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

const struct dev_ops serial_ops = {
    .name = "serial",
    .port = 0x3f8,
    .nr_ports = 8,
    .pio = serial_pio,
    .state_size = sizeof(struct serial_regs),
    .save = serial_save,
    .restore = serial_restore,
};
