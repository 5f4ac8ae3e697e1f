/* SPDX-License-Identifier: MIT */
/*
 * The architectural state of one x86-64 vCPU as plain fixed-width data:
 * what a migration or a snapshot must carry. Hypervisor-neutral (the KVM
 * backend converts to and from its ioctl structs), so the core, the stream
 * format and the tests never see <linux/kvm.h>.
 */
#ifndef FLIT_VMM_X86_CPU_STATE_H
#define FLIT_VMM_X86_CPU_STATE_H

#include <stdint.h>

#define X86_MAX_MSRS	   256
#define X86_MAX_XCRS	   16
#define X86_XSAVE_MAX_SIZE 16384

enum x86_gpr {
	X86_RAX,
	X86_RBX,
	X86_RCX,
	X86_RDX,
	X86_RSI,
	X86_RDI,
	X86_RSP,
	X86_RBP,
	X86_R8,
	X86_R9,
	X86_R10,
	X86_R11,
	X86_R12,
	X86_R13,
	X86_R14,
	X86_R15,
	X86_NR_GPRS
};

struct x86_segment {
	uint64_t base;
	uint32_t limit;
	uint16_t selector;
	uint8_t type, present, dpl, db, s, l, g, avl, unusable, pad;
};

struct x86_dtable {
	uint64_t base;
	uint16_t limit;
	uint16_t pad[3];
};

struct x86_msr {
	uint32_t index;
	uint32_t pad;
	uint64_t data;
};

struct x86_xcr {
	uint32_t xcr;
	uint32_t pad;
	uint64_t value;
};

/* Pending and injected events (exceptions, interrupts, NMI). */
struct x86_events {
	uint8_t exception_injected, exception_nr, exception_has_error_code, exception_pending;
	uint32_t exception_error_code;
	uint8_t interrupt_injected, interrupt_nr, interrupt_soft, interrupt_shadow;
	uint8_t nmi_injected, nmi_pending, nmi_masked, smi_smm;
	uint8_t smi_pending, smi_inside_nmi, smi_latched_init, exception_has_payload;
	uint32_t sipi_vector;
	uint32_t flags;
	uint32_t pad;
	uint64_t exception_payload;
};

struct x86_debugregs {
	uint64_t db[4];
	uint64_t dr6, dr7;
	uint64_t flags;
};

struct x86_cpu_state {
	/* general registers */
	uint64_t gpr[X86_NR_GPRS];
	uint64_t rip, rflags;
	/* system registers */
	struct x86_segment cs, ds, es, fs, gs, ss, tr, ldt;
	struct x86_dtable gdt, idt;
	uint64_t cr0, cr2, cr3, cr4, cr8, efer, apic_base;
	uint64_t interrupt_bitmap[4];
	/* FPU/SSE/AVX: the XSAVE area as the hypervisor returns it */
	uint32_t xsave_size;
	uint32_t nr_xcrs;
	struct x86_xcr xcrs[X86_MAX_XCRS];
	uint32_t nr_msrs;
	uint32_t mp_state;
	struct x86_msr msrs[X86_MAX_MSRS];
	struct x86_events events;
	struct x86_debugregs debugregs;
	uint8_t xsave[X86_XSAVE_MAX_SIZE];
};

/* Parts of struct x86_cpu_state, for partial reads and writes. */
#define X86_PART_REGS	(1u << 0) /* gpr, rip, rflags */
#define X86_PART_SREGS	(1u << 1) /* segments, tables, control registers */
#define X86_PART_FPU	(1u << 2) /* xsave area */
#define X86_PART_XCRS	(1u << 3)
#define X86_PART_MSRS	(1u << 4)
#define X86_PART_EVENTS (1u << 5)
#define X86_PART_DEBUG	(1u << 6)
#define X86_PART_MP	(1u << 7)
#define X86_PART_ALL	0xffu

/* State of the whole VM that is not per vCPU. */
struct x86_vm_state {
	uint64_t clock_ns; /* kvmclock */
	uint32_t clock_flags;
	uint32_t pad;
};

#endif
