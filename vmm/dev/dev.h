/* SPDX-License-Identifier: MIT */
/*
 * Devices on the I/O port bus. A device is an ops table plus its own state
 * struct; the VM dispatches port accesses from vCPU threads to it. Every
 * device saves and restores its state as a plain fixed-size struct, so a
 * migration or snapshot can carry it.
 */
#ifndef FLIT_VMM_DEV_H
#define FLIT_VMM_DEV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vm;
struct vcpu;

struct dev_ops {
	const char *name;
	uint16_t port; /* first port */
	uint16_t nr_ports;
	/* An access of size 1, 2 or 4 at port + offset. For reads, fill data.
	 * Runs on the vCPU thread; devices lock their own state. */
	void (*pio)(void *dev, struct vcpu *vcpu, uint16_t offset, bool out, uint8_t size,
		    uint8_t *data);
	size_t state_size;
	void (*save)(void *dev, void *state);
	int (*restore)(void *dev, const void *state); /* -EINVAL on bad state */
};

#endif
