/* SPDX-License-Identifier: MIT */
/*
 * The tiny runtime of Flit's test guests: ring-3 code with no kernel, so
 * everything is port I/O to the VMM's devices (guests/abi.h) or plain memory.
 * A guest defines guest_main(); every vCPU runs it.
 */
#ifndef FLIT_GUESTS_RT_H
#define FLIT_GUESTS_RT_H

#include <stddef.h>
#include <stdint.h>

#include "../abi.h"

struct guest {
	unsigned vcpu;
	unsigned nr_vcpus;
	volatile struct flit_bootinfo *bi;
};

/* Defined by each guest program; its return value is the vCPU's exit status. */
int guest_main(struct guest *g);

static inline void outl(uint16_t port, uint32_t v)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port) : "memory");
}

static inline uint32_t inl(uint16_t port)
{
	uint32_t v;
	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port) : "memory");
	return v;
}

static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port) : "memory");
}

static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return (uint64_t)hi << 32 | lo;
}

static inline void cpu_relax(void)
{
	__asm__ volatile("pause" ::: "memory");
}

#define barrier() __asm__ volatile("" ::: "memory")

/* Test device. */
__attribute__((noreturn)) void rt_exit(uint32_t status);
static inline void rt_checkpoint(uint32_t id)
{
	outl(FLIT_TESTDEV_PORT + FLIT_TD_CHECKPOINT, id);
}
static inline void rt_progress(uint32_t v)
{
	outl(FLIT_TESTDEV_PORT + FLIT_TD_PROGRESS, v);
}
static inline void rt_report_bad(uint32_t n)
{
	outl(FLIT_TESTDEV_PORT + FLIT_TD_REPORT_BAD, n);
}
static inline void rt_sleep_us(uint32_t us)
{
	outl(FLIT_TESTDEV_PORT + FLIT_TD_SLEEP, us);
}
/* Host wall-clock time in microseconds. */
static inline uint64_t rt_host_time_us(void)
{
	uint64_t lo = inl(FLIT_TESTDEV_PORT + FLIT_TD_TIME_LO);
	return (uint64_t)inl(FLIT_TESTDEV_PORT + FLIT_TD_TIME_HI) << 32 | lo;
}
static inline uint32_t rt_command(void)
{
	return inl(FLIT_TESTDEV_PORT + FLIT_TD_COMMAND);
}

/* Serial output: %s %c %d %u %x %lu %lx %llu %llx %%; writes whole lines. */
void rt_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Argument "key=value" from the boot info as a number (decimal, or with a
 * k/m/g suffix meaning KiB/MiB/GiB), or def if absent. */
uint64_t rt_arg_u64(const struct guest *g, const char *key, uint64_t def);
/* 1 if the word "key" or "key=<value>" is present; copies value (if any). */
int rt_arg_str(const struct guest *g, const char *key, char *out, size_t len);

/* Spin until every vCPU has called it the same number of times. */
void rt_barrier(struct guest *g);

/* xorshift64* PRNG. */
static inline uint64_t rt_rand(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dULL;
}

void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int strcmp(const char *a, const char *b);

#endif
