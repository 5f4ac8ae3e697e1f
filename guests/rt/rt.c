// SPDX-License-Identifier: MIT
#include "rt.h"

#include <stdarg.h>

void *memset(void *d, int c, size_t n)
{
	unsigned char *p = d;
	while (n--)
		*p++ = (unsigned char)c;
	return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
	unsigned char *p = d;
	const unsigned char *q = s;
	while (n--)
		*p++ = *q++;
	return d;
}

int strcmp(const char *a, const char *b)
{
	while (*a && *a == *b) {
		a++;
		b++;
	}
	return (unsigned char)*a - (unsigned char)*b;
}

void rt_exit(uint32_t status)
{
	for (;;)
		outl(FLIT_TESTDEV_PORT + FLIT_TD_EXIT, status);
}

/* Lines are built in a buffer and sent with one rep outsb, so a line is one
 * exit and lines from several vCPUs do not interleave within a line. */
struct line {
	char buf[200];
	unsigned n;
};

static void line_putc(struct line *l, char c)
{
	if (l->n < sizeof(l->buf))
		l->buf[l->n++] = c;
}

static void line_puts(struct line *l, const char *s)
{
	while (*s)
		line_putc(l, *s++);
}

static void line_putu(struct line *l, uint64_t v, unsigned base)
{
	char tmp[24];
	int i = 0;

	do {
		tmp[i++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	while (i)
		line_putc(l, tmp[--i]);
}

void rt_printf(const char *fmt, ...)
{
	struct line l;
	va_list ap;

	l.n = 0;
	va_start(ap, fmt);
	for (; *fmt; fmt++) {
		int longs = 0;
		if (*fmt != '%') {
			line_putc(&l, *fmt);
			continue;
		}
		fmt++;
		while (*fmt == 'l') {
			longs++;
			fmt++;
		}
		switch (*fmt) {
		case 's':
			line_puts(&l, va_arg(ap, const char *));
			break;
		case 'c':
			line_putc(&l, (char)va_arg(ap, int));
			break;
		case 'd': {
			int64_t v = longs ? va_arg(ap, int64_t) : va_arg(ap, int);
			if (v < 0) {
				line_putc(&l, '-');
				v = -v;
			}
			line_putu(&l, (uint64_t)v, 10);
			break;
		}
		case 'u':
			line_putu(&l, longs ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 10);
			break;
		case 'x':
			line_putu(&l, longs ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 16);
			break;
		case '%':
			line_putc(&l, '%');
			break;
		default:
			line_putc(&l, '?');
			break;
		}
	}
	va_end(ap);
	const char *src = l.buf;
	uint64_t n = l.n;
	__asm__ volatile("rep outsb" : "+S"(src), "+c"(n) : "d"((uint16_t)0x3f8) : "memory");
}

static const volatile char *arg_find(const struct guest *g, const char *key)
{
	const volatile char *a = g->bi->args;
	size_t klen = 0;

	while (key[klen])
		klen++;
	while (*a) {
		while (*a == ' ')
			a++;
		size_t i = 0;
		while (i < klen && a[i] == key[i])
			i++;
		if (i == klen && (a[i] == '=' || a[i] == ' ' || a[i] == '\0'))
			return a + i;
		while (*a && *a != ' ')
			a++;
	}
	return 0;
}

uint64_t rt_arg_u64(const struct guest *g, const char *key, uint64_t def)
{
	const volatile char *a = arg_find(g, key);
	uint64_t v = 0;

	if (!a || *a != '=')
		return def;
	a++;
	if (*a < '0' || *a > '9')
		return def;
	while (*a >= '0' && *a <= '9')
		v = v * 10 + (uint64_t)(*a++ - '0');
	switch (*a) {
	case 'k':
	case 'K':
		v <<= 10;
		break;
	case 'm':
	case 'M':
		v <<= 20;
		break;
	case 'g':
	case 'G':
		v <<= 30;
		break;
	}
	return v;
}

int rt_arg_str(const struct guest *g, const char *key, char *out, size_t len)
{
	const volatile char *a = arg_find(g, key);
	size_t n = 0;

	if (!a)
		return 0;
	if (*a == '=')
		for (a++; *a && *a != ' ' && n + 1 < len; n++)
			out[n] = *a++;
	if (len)
		out[n] = 0;
	return 1;
}

static volatile uint32_t barrier_count;
static volatile uint32_t barrier_gen;

void rt_barrier(struct guest *g)
{
	uint32_t gen = barrier_gen;

	if (__atomic_add_fetch(&barrier_count, 1, __ATOMIC_ACQ_REL) == g->nr_vcpus) {
		barrier_count = 0;
		__atomic_store_n(&barrier_gen, gen + 1, __ATOMIC_RELEASE);
		return;
	}
	while (__atomic_load_n(&barrier_gen, __ATOMIC_ACQUIRE) == gen)
		cpu_relax();
}

__attribute__((noreturn, used)) void rt_start(uint64_t vcpu, uint64_t bootinfo_gpa)
{
	struct guest g = {
	    .vcpu = (unsigned)vcpu,
	    .bi = (volatile struct flit_bootinfo *)bootinfo_gpa,
	};

	if (g.bi->magic != FLIT_BOOTINFO_MAGIC || g.bi->version != FLIT_BOOTINFO_VERSION)
		rt_exit(0xbad0b007);
	g.nr_vcpus = g.bi->nr_vcpus;
	rt_exit((uint32_t)guest_main(&g));
}
