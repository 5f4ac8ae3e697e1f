/* SPDX-License-Identifier: MIT */
/*
 * Loads a guest image: a static little-endian x86-64 ELF executable whose
 * PT_LOAD segments lie in [min_gpa, max_gpa). The image is untrusted input:
 * every offset and size is checked, and a bad image gets a one-line reason.
 */
#ifndef FLIT_VMM_LOADER_H
#define FLIT_VMM_LOADER_H

#include <stddef.h>
#include <stdint.h>

struct guest_mem;

struct image_info {
	uint64_t entry;
	uint64_t lo, hi; /* lowest and end of the loaded segments */
};

/* Checks an image without loading it: the same checks as image_load_elf,
 * against the range [min_gpa, max_gpa) only. */
int image_check_elf(const void *img, size_t size, uint64_t min_gpa, uint64_t max_gpa,
		    struct image_info *info, char *err, size_t errlen);

/* Copies the segments into guest memory (zero-filling bss). Returns 0, or
 * -ENOEXEC with a reason in err for a malformed or misplaced image. */
int image_load_elf(const void *img, size_t size, struct guest_mem *mem, uint64_t min_gpa,
		   uint64_t max_gpa, struct image_info *info, char *err, size_t errlen);

/* Reads a whole file (at most max bytes): 0 or -errno (-EFBIG if larger). */
int image_read_file(const char *path, size_t max, void **buf, size_t *size);

#endif
