// SPDX-License-Identifier: MIT
#include "loader.h"

#include <elf.h>
#include <stdbool.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "mem.h"

#define MAX_PHDRS 64

static int bad(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
	return -ENOEXEC;
}

static int elf_header(const uint8_t *b, size_t size, Elf64_Ehdr *eh, char *err, size_t errlen)
{
	if (size < sizeof(*eh))
		return bad(err, errlen, "not an ELF file (only %zu bytes)", size);
	memcpy(eh, b, sizeof(*eh));
	if (memcmp(eh->e_ident, ELFMAG, SELFMAG))
		return bad(err, errlen, "not an ELF file (bad magic)");
	if (eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_ident[EI_DATA] != ELFDATA2LSB)
		return bad(err, errlen, "not a 64-bit little-endian ELF file");
	if (eh->e_machine != EM_X86_64)
		return bad(err, errlen, "ELF machine %u is not x86-64", eh->e_machine);
	if (eh->e_type != ET_EXEC)
		return bad(err, errlen, "not a static executable (ELF type %u)", eh->e_type);
	if (eh->e_phentsize != sizeof(Elf64_Phdr) || eh->e_phnum == 0 || eh->e_phnum > MAX_PHDRS)
		return bad(err, errlen, "bad program header table (%u entries of %u bytes)",
			   eh->e_phnum, eh->e_phentsize);
	if (eh->e_phoff > size || (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr) > size - eh->e_phoff)
		return bad(err, errlen, "program headers beyond the end of the file");
	return 0;
}

static Elf64_Phdr phdr(const uint8_t *b, const Elf64_Ehdr *eh, unsigned i)
{
	Elf64_Phdr ph;

	memcpy(&ph, b + eh->e_phoff + i * sizeof(ph), sizeof(ph));
	return ph;
}

static bool loadable(const Elf64_Phdr *ph)
{
	return ph->p_type == PT_LOAD && ph->p_memsz != 0;
}

int image_check_elf(const void *img, size_t size, uint64_t min_gpa, uint64_t max_gpa,
		    struct image_info *info, char *err, size_t errlen)
{
	const uint8_t *b = img;
	Elf64_Ehdr eh;
	bool entry_ok = false;
	unsigned loads = 0;
	int r = elf_header(b, size, &eh, err, errlen);

	if (r)
		return r;
	info->lo = UINT64_MAX;
	info->hi = 0;
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph = phdr(b, &eh, i);
		if (!loadable(&ph))
			continue;
		if (ph.p_filesz > ph.p_memsz)
			return bad(err, errlen, "segment %u: file size > memory size", i);
		if (ph.p_offset > size || ph.p_filesz > size - ph.p_offset)
			return bad(err, errlen, "segment %u: beyond the end of the file", i);
		if (ph.p_vaddr != ph.p_paddr)
			return bad(err, errlen,
				   "segment %u: virtual != physical address (guests are "
				   "identity mapped)",
				   i);
		if (ph.p_paddr < min_gpa || ph.p_paddr > max_gpa ||
		    ph.p_memsz > max_gpa - ph.p_paddr)
			return bad(err, errlen,
				   "segment %u at 0x%llx+0x%llx is outside the guest image area "
				   "[0x%llx, 0x%llx)",
				   i, (unsigned long long)ph.p_paddr,
				   (unsigned long long)ph.p_memsz, (unsigned long long)min_gpa,
				   (unsigned long long)max_gpa);
		if (ph.p_flags & PF_X && eh.e_entry >= ph.p_paddr &&
		    eh.e_entry - ph.p_paddr < ph.p_memsz)
			entry_ok = true;
		info->lo = MIN(info->lo, ph.p_paddr);
		info->hi = MAX(info->hi, ph.p_paddr + ph.p_memsz);
		loads++;
		/* Overlapping segments would make the load order matter. */
		for (unsigned j = 0; j < i; j++) {
			Elf64_Phdr q = phdr(b, &eh, j);
			if (loadable(&q) && ph.p_paddr < q.p_paddr + q.p_memsz &&
			    q.p_paddr < ph.p_paddr + ph.p_memsz)
				return bad(err, errlen, "segments %u and %u overlap", j, i);
		}
	}
	if (!loads)
		return bad(err, errlen, "no loadable segment");
	if (!entry_ok)
		return bad(err, errlen, "entry point 0x%llx is not in an executable segment",
			   (unsigned long long)eh.e_entry);
	info->entry = eh.e_entry;
	return 0;
}

int image_load_elf(const void *img, size_t size, struct guest_mem *mem, uint64_t min_gpa,
		   uint64_t max_gpa, struct image_info *info, char *err, size_t errlen)
{
	const uint8_t *b = img;
	Elf64_Ehdr eh;
	int r = image_check_elf(img, size, min_gpa, max_gpa, info, err, errlen);

	if (r)
		return r;
	memcpy(&eh, b, sizeof(eh));
	/* Every segment fits: check it against guest RAM before writing any. */
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph = phdr(b, &eh, i);
		if (loadable(&ph) && !mem_gpa_to_hva(mem, ph.p_paddr, ph.p_memsz))
			return bad(err, errlen, "segment %u does not fit guest RAM", i);
	}
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph = phdr(b, &eh, i);
		if (!loadable(&ph))
			continue;
		uint8_t *dst = mem_gpa_to_hva(mem, ph.p_paddr, ph.p_memsz);
		memcpy(dst, b + ph.p_offset, ph.p_filesz);
		memset(dst + ph.p_filesz, 0, ph.p_memsz - ph.p_filesz);
	}
	return 0;
}

int image_read_file(const char *path, size_t max, void **buf, size_t *size)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC), err;
	uint8_t *p = NULL;
	size_t got = 0;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st)) {
		err = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		err = -EISDIR;
		goto out;
	}
	if ((uint64_t)st.st_size > max) {
		err = -EFBIG;
		goto out;
	}
	p = malloc(st.st_size ? (size_t)st.st_size : 1);
	if (!p) {
		err = -ENOMEM;
		goto out;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, p + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			err = n < 0 ? -errno : -EIO;
			goto out;
		}
		got += (size_t)n;
	}
	*buf = p;
	*size = got;
	p = NULL;
	err = 0;
out:
	free(p);
	close(fd);
	return err;
}
