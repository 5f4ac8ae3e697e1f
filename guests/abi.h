/* SPDX-License-Identifier: MIT */
/*
 * The contract between the Flit VMM and its test guests. Shared by both
 * sides: freestanding, fixed-width types only.
 *
 * Entry: every vCPU starts in 64-bit long mode at CPL 3 (RFLAGS.IOPL = 3,
 * interrupts off) at the ELF entry point, with
 *   rdi = vCPU index, rsi = GPA of struct flit_bootinfo,
 *   rsp = top of that vCPU's own stack (16-byte aligned).
 * All guest RAM is identity mapped (virtual = physical), user-accessible,
 * writable, with the accessed and dirty bits already set so the CPU never
 * writes page tables (and the dirty log holds only the guest's own stores).
 *
 * Guest physical layout:
 *   0x001000  GDT            0x002000  TSS with an all-ports I/O bitmap (to 0x4069)
 *   0x005000  IDT (exceptions 0-31, when the image has the stubs)
 *   0x006000  the exception stack (ring 0), up to 0x9000
 *   0x009000  boot info (one page; the guest may write its 'check' part)
 *   0x010000  page tables (PML4, PDPT, one page directory per GiB)
 *   0x100000  vCPU stacks, FLIT_STACK_SIZE each, up to FLIT_MAX_VCPUS
 *   0x200000  the guest image (ELF, linked here), then its bss
 *   data_start .. data_end: free RAM for the guest's workload
 *
 * The test device (I/O ports from FLIT_TESTDEV_PORT, 32-bit accesses):
 *   +0x00 out EXIT        this vCPU is done; value = its exit status
 *   +0x04 out CHECKPOINT  value = checkpoint id; the VMM runs its hook
 *                         synchronously before the guest continues
 *   +0x08 out PROGRESS    value = a progress count (e.g. rounds done)
 *   +0x0c out REPORT_BAD  value = bad pages found by a verify pass
 *   +0x10 in  COMMAND     returns the pending command for this vCPU
 *                         (FLIT_CMD_*) and clears it
 *   +0x18 in  TIME_LO     the host's wall clock (CLOCK_REALTIME) in
 *   +0x1c in  TIME_HI     microseconds: low half (latches the high half),
 *                         then high half. Wall time, so that a guest sees
 *                         the time a migration stopped it (its TSC does not:
 *                         it is restored where it stopped)
 *   +0x14 out SLEEP       value = microseconds (at most 100000): the vCPU
 *                         sleeps in the VMM, like HLT (which ring 3 cannot
 *                         use), so an idle guest leaves the host's CPUs free
 *   +0x20..0x2c out EXC   written by the runtime's exception stubs: vector,
 *                         error code, rip low, rip high; the VMM then fails
 *                         the vCPU, naming the exception
 * The serial port (8250, COM1 at 0x3f8) prints to the VMM's log.
 */
#ifndef FLIT_GUESTS_ABI_H
#define FLIT_GUESTS_ABI_H

#include <stdint.h>

#define FLIT_GDT_GPA	  0x1000ULL
#define FLIT_TSS_GPA	  0x2000ULL
#define FLIT_BOOTINFO_GPA 0x9000ULL
#define FLIT_PGTABLE_GPA  0x10000ULL
#define FLIT_STACKS_GPA	  0x100000ULL
#define FLIT_STACK_SIZE	  0x8000ULL
#define FLIT_MAX_VCPUS	  32
#define FLIT_IMAGE_GPA	  0x200000ULL
#define FLIT_MAX_MEM_GIB  64 /* page directories fit below the stacks */
#define FLIT_PAGE_SIZE	  4096ULL
#define FLIT_PAGE_SHIFT	  12

#define FLIT_TESTDEV_PORT  0x500
#define FLIT_TESTDEV_SIZE  0x40
#define FLIT_TD_EXIT	   0x00
#define FLIT_TD_CHECKPOINT 0x04
#define FLIT_TD_PROGRESS   0x08
#define FLIT_TD_REPORT_BAD 0x0c
#define FLIT_TD_COMMAND	   0x10
#define FLIT_TD_TIME_LO	   0x18
#define FLIT_TD_TIME_HI	   0x1c
#define FLIT_TD_EXC_VECTOR 0x20 /* then error (+0x24), rip low (+0x28), high (+0x2c) */
#define FLIT_TD_EXC_RIP_HI 0x2c

/* Exception stubs in the guest image (see guests/rt/start.S), and where the
 * VMM puts the IDT and the ring-0 stack the stubs run on. */
#define FLIT_EXC_MARKER_OFF 0xf8
#define FLIT_EXC_MARKER	    0x3143584554494c46ULL /* "FLITEXC1" */
#define FLIT_EXC_STUBS_OFF  0x100
#define FLIT_EXC_STUB_SIZE  16
#define FLIT_IDT_GPA	    0x5000ULL
#define FLIT_EXC_STACK_TOP  0x9000ULL /* grows down from the boot info page */
#define FLIT_TD_SLEEP	    0x14
#define FLIT_SLEEP_MAX_US   100000

#define FLIT_CMD_NONE	     0
#define FLIT_CMD_VERIFY	     1 /* verify, report, go on */
#define FLIT_CMD_VERIFY_EXIT 2 /* verify, report, exit with (bad != 0) */
#define FLIT_CMD_EXIT	     3 /* stop the workload, exit 0 */

#define FLIT_BOOTINFO_MAGIC   0x544f4f4254494c46ULL /* "FLITBOOT" */
#define FLIT_BOOTINFO_VERSION 1
#define FLIT_ARGS_MAX	      1024

#define FLIT_CHECK_MAGIC 0x4b43484d54494c46ULL /* "FLITMCHK" */
#define FLIT_CHECK_IDLE	 0xffffffffffffffffULL

/*
 * Published by memcheck so that the VMM can verify every page from the host
 * side. Guest-written, so the VMM treats it as untrusted input.
 */
struct flit_check_desc {
	uint64_t magic;	     /* FLIT_CHECK_MAGIC once the fill is complete */
	uint64_t table_gpa;  /* uint32_t generation per checked page */
	uint64_t first_page; /* guest page number of checked page 0 */
	uint64_t nr_pages;
	/* Page each vCPU is rewriting right now, or FLIT_CHECK_IDLE: it may
	 * hold a mix of generation g and g + 1. */
	uint64_t busy_page[FLIT_MAX_VCPUS];
	/* The longest gap each vCPU saw between two of its rounds, in
	 * microseconds of host wall time: what a pause or a migration cost the
	 * guest, as the guest sees it. */
	uint64_t max_stall_us[FLIT_MAX_VCPUS];
};

struct flit_bootinfo {
	uint64_t magic;
	uint32_t version;
	uint32_t nr_vcpus;
	uint64_t mem_size;   /* bytes of guest RAM from GPA 0 */
	uint64_t data_start; /* page aligned */
	uint64_t data_end;
	uint64_t tsc_khz;	  /* 0 if the VMM does not know */
	char args[FLIT_ARGS_MAX]; /* NUL-terminated "key=value ..." words */
	struct flit_check_desc check;
};

_Static_assert(sizeof(struct flit_bootinfo) <= 4096, "boot info fits one page");
_Static_assert(FLIT_STACKS_GPA + FLIT_MAX_VCPUS * FLIT_STACK_SIZE <= FLIT_IMAGE_GPA,
	       "stacks below the image");
_Static_assert(FLIT_PGTABLE_GPA + (2 + FLIT_MAX_MEM_GIB) * 4096 <= FLIT_STACKS_GPA,
	       "page tables below the stacks");

#endif
