// SPDX-License-Identifier: MIT
#include "dump.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/bitmap.h"
#include "common/util.h"
#include "conn.h"
#include "vmm/arch/x86/cpu_state.h"

int mig_dump(int fd, FILE *out, struct mig_dump_stats *st, char *why, size_t whylen)
{
	struct mig_conn c;
	struct mig_rec_hdr h;
	uint64_t mem_pages = 0;
	size_t cap = 64 * 1024;
	uint8_t *buf = malloc(cap);
	int r;

	memset(st, 0, sizeof(*st));
	mig_conn_init_fd(&c, fd);
	if (!buf)
		return -ENOMEM;
	r = mig_recv_stream_hdr(&c);
	if (!r && out)
		fprintf(out, "stream version %u.%u\n", MIG_VERSION_MAJOR, MIG_VERSION_MINOR);
	while (!r) {
		uint64_t start = c.rx_bytes;
		r = mig_recv_hdr(&c, &h);
		if (r == -ECONNRESET && c.rx_bytes == start) {
			r = 0; /* the end of the capture, at a record boundary */
			break;
		}
		if (r == -ECONNRESET)
			snprintf(c.why, sizeof(c.why), "stream cut inside a record header");
		if (r)
			break;
		if (h.len > cap) { /* grows to the largest record seen (bounded by the reader) */
			uint8_t *nb = realloc(buf, h.len);
			if (!nb) {
				r = -ENOMEM;
				break;
			}
			buf = nb;
			cap = h.len;
		}
		r = mig_recv_payload(&c, &h, buf, h.len);
		if (r == -ECONNRESET)
			snprintf(c.why, sizeof(c.why), "stream cut inside record %u", h.seq);
		if (r)
			break;
		st->records++;
		if (out)
			fprintf(out, "%6u %-9s %8u B", h.seq, mig_rec_name(h.type) ?: "?", h.len);
		switch (h.type) {
		case MIG_REC_HELLO: {
			struct mig_hello hl;
			if (h.len != sizeof(hl))
				goto bad_len;
			memcpy(&hl, buf, sizeof(hl));
			mem_pages = hl.layout.mem_size / 4096;
			if (out)
				fprintf(
				    out,
				    "  role %u channel %u: %llu MiB, %u vCPUs, %u data channels",
				    hl.role, hl.channel,
				    (unsigned long long)(hl.layout.mem_size >> 20),
				    hl.layout.nr_vcpus, hl.layout.nr_channels);
			break;
		}
		case MIG_REC_PAGES: {
			struct mig_pages ph;
			if (h.len < sizeof(ph))
				goto bad_len;
			memcpy(&ph, buf, sizeof(ph));
			if (!ph.count || ph.count > MIG_MAX_RUN_PAGES ||
			    h.len != sizeof(ph) + (uint64_t)ph.count * 4096 ||
			    (mem_pages && (ph.gfn >= mem_pages || ph.count > mem_pages - ph.gfn)))
				goto bad_len;
			st->pages += ph.count;
			if (out)
				fprintf(out, "  gfn %llu +%u", (unsigned long long)ph.gfn,
					ph.count);
			break;
		}
		case MIG_REC_ZERO: {
			struct mig_zero z;
			if (h.len < sizeof(z))
				goto bad_len;
			memcpy(&z, buf, sizeof(z));
			if (!z.count || z.count > 512 ||
			    h.len != sizeof(z) + BITMAP_WORDS(z.count) * 8)
				goto bad_len;
			uint64_t n = bitmap_weight((uint64_t *)(buf + sizeof(z)), z.count);
			st->zero_pages += n;
			if (out)
				fprintf(out, "  gfn %llu: %llu zero of %u",
					(unsigned long long)z.gfn, (unsigned long long)n, z.count);
			break;
		}
		case MIG_REC_CPU: {
			struct mig_cpu cp;
			if (h.len != sizeof(cp) + sizeof(struct x86_cpu_state))
				goto bad_len;
			memcpy(&cp, buf, sizeof(cp));
			if (out) {
				struct x86_cpu_state *s =
				    (struct x86_cpu_state *)(buf + sizeof(cp));
				fprintf(out, "  vCPU %u rip 0x%llx, %u MSRs", cp.index,
					(unsigned long long)s->rip, s->nr_msrs);
			}
			break;
		}
		case MIG_REC_ROUND: {
			struct mig_round rr;
			if (h.len != sizeof(rr))
				goto bad_len;
			memcpy(&rr, buf, sizeof(rr));
			if (out)
				fprintf(out, "  round %u: %llu pages", rr.round,
					(unsigned long long)rr.pages);
			break;
		}
		case MIG_REC_ERROR:
			if (out && h.len > sizeof(struct mig_error))
				fprintf(out, "  \"%.*s\"",
					(int)MIN(h.len - sizeof(struct mig_error), 200),
					(char *)buf + sizeof(struct mig_error));
			break;
		default:
			break;
		}
		if (out)
			fputc('\n', out);
		continue;
	bad_len:
		snprintf(c.why, sizeof(c.why), "malformed %s record (seq %u, %u bytes)",
			 mig_rec_name(h.type) ?: "?", h.seq, h.len);
		r = -EPROTO;
	}
	st->bytes = c.rx_bytes;
	if (r && why)
		snprintf(why, whylen, "%s", c.why[0] ? c.why : strerror(-r));
	free(buf);
	return r;
}
