/* SPDX-License-Identifier: MIT */
/* CRC-32C (Castagnoli), the checksum of every migration record. Uses the
 * SSE4.2 instruction where the CPU has it (checked once), three streams
 * interleaved on long buffers; a table otherwise. */
#ifndef FLIT_COMMON_CRC32C_H
#define FLIT_COMMON_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continue a CRC: start with crc = 0. */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);
/* The same by table lookups only: the reference the fast path is tested
 * against. */
uint32_t crc32c_portable(uint32_t crc, const void *buf, size_t len);

#endif
