// SPDX-License-Identifier: MIT
/*
 * The guest image loader against malformed input: every image below is
 * refused with -ENOEXEC and a reason, and guest memory is not touched; the
 * real guest images load.
 */
#include <elf.h>
#include <errno.h>
#include <string.h>

#include "common/util.h"
#include "guests/abi.h"
#include "tests/lib/test.h"
#include "vmm/loader.h"
#include "vmm/mem.h"

#define MEM (16 * MiB)

struct img {
	Elf64_Ehdr eh;
	Elf64_Phdr ph[2];
	uint8_t code[64];
};

static void make_img(struct img *im)
{
	memset(im, 0, sizeof(*im));
	memcpy(im->eh.e_ident, ELFMAG, SELFMAG);
	im->eh.e_ident[EI_CLASS] = ELFCLASS64;
	im->eh.e_ident[EI_DATA] = ELFDATA2LSB;
	im->eh.e_ident[EI_VERSION] = EV_CURRENT;
	im->eh.e_type = ET_EXEC;
	im->eh.e_machine = EM_X86_64;
	im->eh.e_version = EV_CURRENT;
	im->eh.e_entry = FLIT_IMAGE_GPA;
	im->eh.e_phoff = offsetof(struct img, ph);
	im->eh.e_ehsize = sizeof(Elf64_Ehdr);
	im->eh.e_phentsize = sizeof(Elf64_Phdr);
	im->eh.e_phnum = 1;
	im->ph[0] = (Elf64_Phdr){.p_type = PT_LOAD,
				 .p_flags = PF_R | PF_X,
				 .p_offset = offsetof(struct img, code),
				 .p_vaddr = FLIT_IMAGE_GPA,
				 .p_paddr = FLIT_IMAGE_GPA,
				 .p_filesz = sizeof(im->code),
				 .p_memsz = 8192,
				 .p_align = 4096};
	memset(im->code, 0xcc, sizeof(im->code));
}

static int load(const void *p, size_t n, struct guest_mem *m, struct image_info *info, char *err)
{
	return image_load_elf(p, n, m, FLIT_IMAGE_GPA, m->size, info, err, 200);
}

static void good_image_loads(void)
{
	struct guest_mem m;
	struct image_info info;
	struct img im;
	char err[200];

	TEST_ASSERT_EQ(mem_create(&m, MEM, MEM_ANON), 0);
	make_img(&im);
	uint8_t *dst = mem_gpa_to_hva(&m, FLIT_IMAGE_GPA, 8192);
	memset(dst, 0x55, 8192);
	TEST_ASSERT(load(&im, sizeof(im), &m, &info, err) == 0, "%s", err);
	TEST_ASSERT_EQ(info.entry, FLIT_IMAGE_GPA);
	TEST_ASSERT_EQ(info.hi, FLIT_IMAGE_GPA + 8192);
	TEST_ASSERT(dst[0] == 0xcc && dst[63] == 0xcc && dst[64] == 0 && dst[8191] == 0,
		    "code copied and bss zeroed");
	mem_destroy(&m);
}

static void bad_images_refused(void)
{
	struct guest_mem m;
	struct image_info info;
	struct img im;
	char err[200];
	static const char *const names[] = {
	    "empty",	      "short header",	"bad magic",	 "32-bit",
	    "big-endian",     "wrong machine",	"shared object", "no phdrs",
	    "phdrs past end", "filesz > memsz", "data past end", "below image area",
	    "past RAM end",   "vaddr != paddr", "entry outside", "entry not exec",
	    "overlap",	      "address wraps",	"bad phentsize", "no PT_LOAD",
	};

	TEST_ASSERT_EQ(mem_create(&m, MEM, MEM_ANON), 0);
	uint8_t *canary = mem_gpa_to_hva(&m, FLIT_IMAGE_GPA, 4096);
	for (unsigned c = 0; c < ARRAY_SIZE(names); c++) {
		size_t size = sizeof(im);
		make_img(&im);
		switch (c) {
		case 0:
			size = 0;
			break;
		case 1:
			size = 40;
			break;
		case 2:
			im.eh.e_ident[1] = 'X';
			break;
		case 3:
			im.eh.e_ident[EI_CLASS] = ELFCLASS32;
			break;
		case 4:
			im.eh.e_ident[EI_DATA] = ELFDATA2MSB;
			break;
		case 5:
			im.eh.e_machine = EM_AARCH64;
			break;
		case 6:
			im.eh.e_type = ET_DYN;
			break;
		case 7:
			im.eh.e_phnum = 0;
			break;
		case 8:
			im.eh.e_phoff = sizeof(im) - 8;
			break;
		case 9:
			im.ph[0].p_filesz = im.ph[0].p_memsz + 1;
			break;
		case 10:
			im.ph[0].p_offset = sizeof(im) - 8;
			break;
		case 11:
			im.ph[0].p_vaddr = im.ph[0].p_paddr = 0x1000;
			im.eh.e_entry = 0x1000;
			break;
		case 12:
			im.ph[0].p_memsz = MEM;
			break;
		case 13:
			im.ph[0].p_vaddr += 4096;
			break;
		case 14:
			im.eh.e_entry = FLIT_IMAGE_GPA + 8192;
			break;
		case 15:
			im.ph[0].p_flags = PF_R | PF_W;
			break;
		case 16:
			im.eh.e_phnum = 2;
			im.ph[1] = im.ph[0];
			im.ph[1].p_vaddr = im.ph[1].p_paddr = FLIT_IMAGE_GPA + 4096;
			break;
		case 17:
			im.ph[0].p_memsz = UINT64_MAX - 100;
			break;
		case 18:
			im.eh.e_phentsize = 40;
			break;
		case 19:
			im.ph[0].p_type = PT_NOTE;
			break;
		}
		memset(canary, 0x5a, 4096);
		err[0] = 0;
		int r = load(&im, size, &m, &info, err);
		TEST_ASSERT(r == -ENOEXEC, "case '%s' returned %d", names[c], r);
		TEST_ASSERT(err[0], "case '%s' gave no reason", names[c]);
		TEST_ASSERT(canary[0] == 0x5a && canary[100] == 0x5a,
			    "case '%s' wrote guest memory", names[c]);
		printf("  refused %-18s: %s\n", names[c], err);
	}
	mem_destroy(&m);
}

static void real_guests_load(void)
{
	static const char *const guests[] = {"hello", "memcheck", "memtouch", "dirtyset"};
	struct guest_mem m;
	char err[200], rel[64];

	TEST_ASSERT_EQ(mem_create(&m, MEM, MEM_MEMFD), 0);
	for (unsigned i = 0; i < ARRAY_SIZE(guests); i++) {
		void *buf;
		size_t size;
		struct image_info info;
		snprintf(rel, sizeof(rel), "guests/%s.elf", guests[i]);
		TEST_ASSERT_EQ(image_read_file(test_build_path(rel), 64 * MiB, &buf, &size), 0);
		TEST_ASSERT(load(buf, size, &m, &info, err) == 0, "%s: %s", guests[i], err);
		TEST_ASSERT(info.lo == FLIT_IMAGE_GPA && info.hi < 4 * MiB, "%s placed", guests[i]);
		/* Every prefix of a real image is refused or loads: never crashes. */
		for (size_t cut = 0; cut < size; cut += 61)
			(void)load(buf, cut, &m, &info, err);
		free(buf);
	}
	mem_destroy(&m);
}

static void read_file_errors(void)
{
	void *buf;
	size_t size;
	TEST_ASSERT_EQ(image_read_file("/nonexistent/flit", 1024, &buf, &size), -ENOENT);
	TEST_ASSERT_EQ(image_read_file("/", 1024, &buf, &size), -EISDIR);
	TEST_ASSERT_EQ(image_read_file(test_build_path("guests/memcheck.elf"), 16, &buf, &size),
		       -EFBIG);
}

static void gpa_translation_bounds(void)
{
	struct guest_mem m;

	TEST_ASSERT_EQ(mem_create(&m, 4 * MiB, MEM_ANON), 0);
	TEST_ASSERT(mem_gpa_to_hva(&m, 0, 4 * MiB) != NULL, "whole RAM");
	TEST_ASSERT(mem_gpa_to_hva(&m, 4 * MiB, 0) != NULL, "empty range at the end");
	TEST_ASSERT(mem_gpa_to_hva(&m, 4 * MiB - 1, 2) == NULL, "crosses the end");
	TEST_ASSERT(mem_gpa_to_hva(&m, UINT64_MAX - 1, 4) == NULL, "wraps");
	TEST_ASSERT(mem_gpa_to_hva(&m, 8, UINT64_MAX) == NULL, "huge length");
	mem_destroy(&m);
	TEST_ASSERT_EQ(mem_create(&m, 3 * MiB, MEM_ANON), -EINVAL);
	TEST_ASSERT_EQ(mem_create(&m, 0, MEM_ANON), -EINVAL);
	mem_destroy(&m); /* tolerates a failed create */
}

int main(int argc, char **argv)
{
	static const struct test_case cases[] = {
	    TEST_CASE(good_image_loads),       TEST_CASE(bad_images_refused),
	    TEST_CASE(real_guests_load),       TEST_CASE(read_file_errors),
	    TEST_CASE(gpa_translation_bounds),
	};
	return test_main(argc, argv, cases, ARRAY_SIZE(cases));
}
