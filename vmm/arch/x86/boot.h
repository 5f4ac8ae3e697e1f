/* SPDX-License-Identifier: MIT */
/*
 * Direct long-mode entry at CPL 3 (the layout is in guests/abi.h): the VMM
 * builds the GDT, a TSS and identity page tables in guest RAM, and sets each
 * vCPU's registers so that its first instruction is the guest's entry point
 * in 64-bit mode, ring 3, with IOPL 3 so port I/O reaches the VMM's devices.
 * No guest code runs at CPL 0 (on some hosts it is emulated, ~1000x slower).
 */
#ifndef FLIT_VMM_X86_BOOT_H
#define FLIT_VMM_X86_BOOT_H

#include <stdbool.h>
#include <stdint.h>

#include "cpu_state.h"

struct guest_mem;

/* Writes GDT, TSS and page tables mapping all of guest RAM. RAM must be at
 * least 4 MiB and at most FLIT_MAX_MEM_GIB. */
int x86_boot_build_tables(struct guest_mem *mem);

/* If the loaded image carries the runtime's exception stubs, builds an IDT
 * for vectors 0-31 pointing at them (ring-0 interrupt gates) and the TSS's
 * ring-0 stack. Returns whether it did. */
bool x86_boot_build_idt(struct guest_mem *mem);

/* Sets the X86_PART_REGS | X86_PART_SREGS parts of *st for vCPU 'index'
 * entering at 'entry'; the other fields of *st are left as they are. With
 * idt, the IDT of x86_boot_build_idt is loaded. */
void x86_boot_vcpu_state(struct x86_cpu_state *st, uint64_t entry, uint32_t index, bool idt);

#endif
