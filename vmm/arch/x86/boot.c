// SPDX-License-Identifier: MIT
#include "boot.h"

#include <errno.h>
#include <string.h>

#include "common/util.h"
#include "guests/abi.h"
#include "vmm/mem.h"

#define PTE_P  (1ULL << 0)
#define PTE_RW (1ULL << 1)
#define PTE_US (1ULL << 2)
#define PTE_A  (1ULL << 5)
#define PTE_D  (1ULL << 6)
#define PTE_PS (1ULL << 7)

#define CR0_PE	       (1ULL << 0)
#define CR0_MP	       (1ULL << 1)
#define CR0_ET	       (1ULL << 4)
#define CR0_NE	       (1ULL << 5)
#define CR0_WP	       (1ULL << 16)
#define CR0_PG	       (1ULL << 31)
#define CR4_PAE	       (1ULL << 5)
#define CR4_OSFXSR     (1ULL << 9)
#define CR4_OSXMMEXCPT (1ULL << 10)
#define EFER_LME       (1ULL << 8)
#define EFER_LMA       (1ULL << 10)
#define RFLAGS_FIXED   0x2ULL
#define RFLAGS_IOPL3   0x3000ULL

#define SEL_KCODE   0x08
#define SEL_UCODE   0x18
#define SEL_UDATA   0x20
#define SEL_TSS	    0x28
#define GDT_ENTRIES 7
/* A 64-bit TSS (0x68 bytes) followed by an I/O permission bitmap that
 * allows every port, plus the terminating 0xff byte. IOPL 3 alone should
 * allow port I/O at CPL 3, but some hypervisors check the bitmap anyway. */
#define TSS_IOMAP_OFF 0x68
#define TSS_IOMAP_LEN (65536 / 8)
#define TSS_LIMIT     (TSS_IOMAP_OFF + TSS_IOMAP_LEN)

static uint64_t tss_desc_low(uint64_t base, uint32_t limit)
{
	return (limit & 0xffffULL) | (base & 0xffffffULL) << 16 | 0xbULL << 40 | 1ULL << 47 |
	       ((uint64_t)(limit >> 16) & 0xf) << 48 | ((base >> 24) & 0xff) << 56;
}

int x86_boot_build_tables(struct guest_mem *mem)
{
	uint64_t gib = (mem->size + GiB - 1) / GiB;
	uint64_t *gdt, *pml4, *pdpt;

	if (mem->size < 4 * MiB || gib > FLIT_MAX_MEM_GIB)
		return -EINVAL;
	gdt = mem_gpa_to_hva(mem, FLIT_GDT_GPA, GDT_ENTRIES * 8);
	pml4 = mem_gpa_to_hva(mem, FLIT_PGTABLE_GPA, (2 + gib) * 4096);
	uint8_t *tss = mem_gpa_to_hva(mem, FLIT_TSS_GPA, TSS_LIMIT + 1);
	if (!gdt || !pml4 || !tss)
		return -EINVAL;

	memset(gdt, 0, GDT_ENTRIES * 8);
	gdt[1] = 0x00af9b000000ffffULL; /* kernel code, 64-bit (unused, for completeness) */
	gdt[2] = 0x00cf93000000ffffULL; /* kernel data */
	gdt[3] = 0x00affb000000ffffULL; /* user code, 64-bit, DPL 3 */
	gdt[4] = 0x00cff3000000ffffULL; /* user data, DPL 3 */
	gdt[5] = tss_desc_low(FLIT_TSS_GPA, TSS_LIMIT);
	gdt[6] = FLIT_TSS_GPA >> 32;
	memset(tss, 0, TSS_LIMIT + 1);
	uint16_t iomap = TSS_IOMAP_OFF;
	memcpy(tss + 0x66, &iomap, sizeof(iomap));
	tss[TSS_LIMIT] = 0xff;

	/* Accessed and dirty bits preset: the CPU then never writes the page
	 * tables, so they never appear in a dirty log. */
	memset(pml4, 0, (2 + gib) * 4096);
	pdpt = pml4 + 512;
	pml4[0] = (FLIT_PGTABLE_GPA + 0x1000) | PTE_P | PTE_RW | PTE_US | PTE_A;
	for (uint64_t g = 0; g < gib; g++) {
		uint64_t *pd = pml4 + 512 * (2 + g);
		pdpt[g] = (FLIT_PGTABLE_GPA + 0x1000 * (2 + g)) | PTE_P | PTE_RW | PTE_US | PTE_A;
		for (uint64_t i = 0; i < 512; i++) {
			uint64_t addr = g * GiB + i * 2 * MiB;
			if (addr >= mem->size)
				break;
			pd[i] = addr | PTE_P | PTE_RW | PTE_US | PTE_A | PTE_D | PTE_PS;
		}
	}
	return 0;
}

bool x86_boot_build_idt(struct guest_mem *mem)
{
	const uint64_t *marker =
	    mem_gpa_to_hva(mem, FLIT_IMAGE_GPA + FLIT_EXC_MARKER_OFF, sizeof(uint64_t));
	uint64_t *idt = mem_gpa_to_hva(mem, FLIT_IDT_GPA, 32 * 16);
	uint8_t *tss = mem_gpa_to_hva(mem, FLIT_TSS_GPA, 0x68);

	if (!marker || *marker != FLIT_EXC_MARKER || !idt || !tss)
		return false;
	for (unsigned v = 0; v < 32; v++) {
		uint64_t off = FLIT_IMAGE_GPA + FLIT_EXC_STUBS_OFF + v * FLIT_EXC_STUB_SIZE;
		/* 64-bit interrupt gate: present, DPL 0, type 0xe, kernel code. */
		idt[2 * v] = (off & 0xffff) | (uint64_t)SEL_KCODE << 16 | 0x8eULL << 40 |
			     ((off >> 16) & 0xffff) << 48;
		idt[2 * v + 1] = off >> 32;
	}
	uint64_t rsp0 = FLIT_EXC_STACK_TOP;
	memcpy(tss + 4, &rsp0, sizeof(rsp0)); /* TSS.RSP0: the stubs' stack */
	return true;
}

static struct x86_segment seg_flat(uint16_t sel, uint8_t type, uint8_t l, uint8_t db)
{
	return (struct x86_segment){.base = 0,
				    .limit = 0xffffffff,
				    .selector = sel,
				    .type = type,
				    .present = 1,
				    .dpl = 3,
				    .db = db,
				    .s = 1,
				    .l = l,
				    .g = 1};
}

void x86_boot_vcpu_state(struct x86_cpu_state *st, uint64_t entry, uint32_t index, bool idt)
{
	memset(st->gpr, 0, sizeof(st->gpr));
	st->gpr[X86_RDI] = index;
	st->gpr[X86_RSI] = FLIT_BOOTINFO_GPA;
	st->gpr[X86_RSP] = FLIT_STACKS_GPA + (uint64_t)(index + 1) * FLIT_STACK_SIZE;
	st->rip = entry;
	st->rflags = RFLAGS_FIXED | RFLAGS_IOPL3;

	st->cs = seg_flat(SEL_UCODE | 3, 0xb, 1, 0);
	st->ds = st->es = st->fs = st->gs = st->ss = seg_flat(SEL_UDATA | 3, 0x3, 0, 1);
	st->tr = (struct x86_segment){.base = FLIT_TSS_GPA,
				      .limit = TSS_LIMIT,
				      .selector = SEL_TSS,
				      .type = 0xb,
				      .present = 1};
	st->ldt = (struct x86_segment){.type = 0x2, .unusable = 1};
	st->gdt = (struct x86_dtable){.base = FLIT_GDT_GPA, .limit = GDT_ENTRIES * 8 - 1};
	st->idt = idt ? (struct x86_dtable){.base = FLIT_IDT_GPA, .limit = 32 * 16 - 1}
		      : (struct x86_dtable){.base = 0, .limit = 0};
	st->cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
	st->cr2 = 0;
	st->cr3 = FLIT_PGTABLE_GPA;
	st->cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
	st->cr8 = 0;
	st->efer = EFER_LME | EFER_LMA;
	memset(st->interrupt_bitmap, 0, sizeof(st->interrupt_bitmap));
}
