// SPDX-License-Identifier: MIT
/*
 * The destination against a hostile or broken source, on the fake
 * hypervisor (no KVM needed): every case below must end the migration with
 * a clear reason, build no VM, and never crash. Inputs tried: garbage,
 * a wrong version, a wrong token, an invalid layout, a truncated stream, an
 * oversized length, a bad checksum, a lost record (sequence gap), pages
 * beyond RAM, pages on the wrong channel, a malformed page run, an unknown
 * mandatory record, a data channel from another migration, COMPLETE before
 * the vCPU state, a vCPU index out of range, DISCARD spans off a bitmap
 * word, beyond RAM, empty or of the wrong length, POSTCOPY with an unknown
 * flag. Plus the record layer itself:
 * an optional unknown record is skipped, an ERROR record is reported.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "common/util.h"
#include "migrate/auth.h"
#include "migrate/conn.h"
#include "migrate/handshake.h"
#include "migrate/migrate.h"
#include "tests/lib/fake_hv.h"
#include "tests/lib/test.h"

#define TOKEN "a-token-of-sufficient-length"

struct dest_run {
	struct mig_dest_thread t;
	uint16_t port;
	int lfd;
};

static void dest_start(struct dest_run *d)
{
	memset(d, 0, sizeof(*d));
	d->lfd = mig_listen("tcp:127.0.0.1:0", &d->port);
	TEST_ASSERT(d->lfd >= 0, "listen");
	mig_dest_params_default(&d->t.p);
	d->t.p.listen_fd = d->lfd;
	d->t.p.accept_timeout_ms = 5000;
	d->t.p.timeout_ms = 3000;
	d->t.p.hv = &fake_hv_ops;
	d->t.p.token_len = strlen(TOKEN);
	memcpy(d->t.p.token, TOKEN, d->t.p.token_len);
	TEST_ASSERT_EQ(mig_dest_spawn(&d->t), 0);
}

/* Waits for the destination and checks that it refused, saying 'why'. */
static void dest_refused(struct dest_run *d, const char *why)
{
	mig_dest_join(&d->t);
	close(d->lfd);
	TEST_ASSERT(d->t.r != 0, "the destination accepted a bad stream");
	TEST_ASSERT(d->t.vm == NULL, "the destination kept a VM");
	TEST_ASSERT(strstr(d->t.rep.error, why) != NULL, "reason '%s' does not say '%s'",
		    d->t.rep.error, why);
	printf("  refused: %s\n", d->t.rep.error);
}

static void connect_to(struct dest_run *d, struct mig_conn *c)
{
	char addr[64];
	snprintf(addr, sizeof(addr), "tcp:127.0.0.1:%u", d->port);
	TEST_ASSERT_EQ(mig_connect(addr, 5000, c), 0);
	mig_conn_set_timeout(c, 5000);
}

static struct mig_hello hello(uint32_t role, uint32_t channel, const uint8_t *session)
{
	struct mig_hello h = {.role = role, .channel = channel};
	h.layout = (struct mig_layout){
	    .mem_size = 8 * MiB, .nr_vcpus = 1, .page_size = 4096, .nr_channels = 1};
	memcpy(h.session, session, 16);
	mig_random(h.nonce, sizeof(h.nonce));
	return h;
}

static const uint8_t session[16] = "session-one-two";

/* Control and one data channel, both authenticated. */
static void open_both(struct dest_run *d, struct mig_conn *ctl, struct mig_conn *data)
{
	struct mig_hello h = hello(MIG_ROLE_CONTROL, 0, session);
	connect_to(d, ctl);
	TEST_ASSERT_EQ(mig_handshake_connect(ctl, (const uint8_t *)TOKEN, strlen(TOKEN), &h), 0);
	h = hello(MIG_ROLE_DATA, 1, session);
	connect_to(d, data);
	TEST_ASSERT_EQ(mig_handshake_connect(data, (const uint8_t *)TOKEN, strlen(TOKEN), &h), 0);
}

static void send_raw(struct mig_conn *c, const void *buf, size_t len)
{
	TEST_ASSERT(send(c->fd, buf, len, MSG_NOSIGNAL) == (ssize_t)len, "send");
}

static void garbage(void)
{
	struct dest_run d;
	struct mig_conn c;
	char junk[64];

	dest_start(&d);
	connect_to(&d, &c);
	memset(junk, 'x', sizeof(junk));
	send_raw(&c, junk, sizeof(junk));
	dest_refused(&d, "not a Flit migration stream");
	mig_conn_close(&c);
}

static void wrong_version(void)
{
	struct dest_run d;
	struct mig_conn c;
	struct mig_stream_hdr h = {.magic = MIG_MAGIC, .major = 2};

	dest_start(&d);
	connect_to(&d, &c);
	send_raw(&c, &h, sizeof(h));
	dest_refused(&d, "stream version 2.0");
	mig_conn_close(&c);
}

static void wrong_token(void)
{
	struct dest_run d;
	struct mig_conn c;
	struct mig_hello h = hello(MIG_ROLE_CONTROL, 0, session);

	dest_start(&d);
	connect_to(&d, &c);
	int r = mig_handshake_connect(&c, (const uint8_t *)"not-the-token-at-all", 20, &h);
	TEST_ASSERT_EQ(r, -EACCES);
	dest_refused(&d, "authentication failed");
	mig_conn_close(&c);
}

static void bad_layout(void)
{
	struct dest_run d;
	struct mig_conn c;
	struct mig_hello h = hello(MIG_ROLE_CONTROL, 0, session);

	h.layout.mem_size = 3 * MiB;
	dest_start(&d);
	connect_to(&d, &c);
	int r = mig_handshake_connect(&c, (const uint8_t *)TOKEN, strlen(TOKEN), &h);
	TEST_ASSERT(r == -ECONNABORTED && strstr(c.why, "invalid layout"), "source told: %s",
		    c.why);
	dest_refused(&d, "invalid layout");
	mig_conn_close(&c);
}

/* A data-channel scenario: 'fn' sends something bad on the data channel. */
static void data_case(void (*fn)(struct mig_conn *data), const char *why)
{
	struct dest_run d;
	struct mig_conn ctl, data;

	dest_start(&d);
	open_both(&d, &ctl, &data);
	fn(&data);
	dest_refused(&d, why);
	mig_conn_close(&data);
	mig_conn_close(&ctl);
}

static void truncate_fn(struct mig_conn *c)
{
	struct mig_rec_hdr h = {.type = MIG_REC_PAGES, .len = 16 + 4096, .seq = c->tx_seq};
	send_raw(c, &h, sizeof(h));
	send_raw(c, "partial", 7);
	shutdown(c->fd, SHUT_WR);
}

static void oversized_fn(struct mig_conn *c)
{
	struct mig_rec_hdr h = {.type = MIG_REC_PAGES, .len = 1u << 30, .seq = c->tx_seq};
	send_raw(c, &h, sizeof(h));
}

static void pages(struct mig_conn *c, uint64_t gfn, uint32_t count, bool bad_crc)
{
	static uint8_t buf[4 * 4096];
	struct mig_pages ph = {.gfn = gfn, .count = count};
	struct iovec iov[2] = {{&ph, sizeof(ph)}, {buf, (size_t)count * 4096}};

	if (!bad_crc) {
		TEST_ASSERT_EQ(mig_send_iov(c, MIG_REC_PAGES, iov, 2), 0);
		return;
	}
	struct mig_rec_hdr h = {.type = MIG_REC_PAGES,
				.len = (uint32_t)(sizeof(ph) + count * 4096),
				.seq = c->tx_seq++};
	h.crc = crc32c(crc32c(0, &ph, sizeof(ph)), buf, (size_t)count * 4096) ^ 1;
	send_raw(c, &h, sizeof(h));
	send_raw(c, &ph, sizeof(ph));
	send_raw(c, buf, (size_t)count * 4096);
}

static void bad_crc_fn(struct mig_conn *c)
{
	pages(c, 600, 2, true);
}

static void seq_gap_fn(struct mig_conn *c)
{
	pages(c, 600, 1, false);
	c->tx_seq++; /* a record lost (the handshake used 0 and 1, so 4 comes where 3 is due) */
	pages(c, 601, 1, false);
}

static void beyond_ram_fn(struct mig_conn *c)
{
	pages(c, 2047, 2, false); /* 8 MiB = 2048 pages */
}

static void wrong_channel_fn(struct mig_conn *c)
{
	/* With one data channel every page is ours; claim a count that does
	 * not match the length instead. */
	struct mig_pages ph = {.gfn = 10, .count = 3};
	uint8_t buf[4096] = {0};
	struct iovec iov[2] = {{&ph, sizeof(ph)}, {buf, sizeof(buf)}};
	TEST_ASSERT_EQ(mig_send_iov(c, MIG_REC_PAGES, iov, 2), 0);
}

static void unknown_type_fn(struct mig_conn *c)
{
	TEST_ASSERT_EQ(mig_send_rec(c, 999, "x", 1), 0);
}

/* An unchecked PAGES record whose crc does not match its header. */
static void unchecked_bad_header_fn(struct mig_conn *c)
{
	static uint8_t buf[4096];
	struct mig_pages ph = {.gfn = 600, .count = 1};
	struct mig_rec_hdr h = {.type = MIG_REC_PAGES,
				.flags = MIG_F_UNCHECKED,
				.len = sizeof(ph) + 4096,
				.seq = c->tx_seq++};
	h.crc = crc32c(0, &ph, sizeof(ph));
	ph.gfn = 601; /* changed after the checksum */
	send_raw(c, &h, sizeof(h));
	send_raw(c, &ph, sizeof(ph));
	send_raw(c, buf, sizeof(buf));
}

/* MIG_F_UNCHECKED on a record other than PAGES. */
static void unchecked_not_pages_fn(struct mig_conn *c)
{
	struct mig_round rr = {.round = 1};
	struct mig_rec_hdr h = {
	    .type = MIG_REC_ROUND, .flags = MIG_F_UNCHECKED, .len = sizeof(rr), .seq = c->tx_seq++};
	send_raw(c, &h, sizeof(h));
	send_raw(c, &rr, sizeof(rr));
}

static void unknown_flag_fn(struct mig_conn *c)
{
	struct mig_rec_hdr h = {.type = MIG_REC_END, .flags = 0x8000, .seq = c->tx_seq++};
	send_raw(c, &h, sizeof(h));
}

static void unchecked_pages_bad_header(void)
{
	data_case(unchecked_bad_header_fn, "checksum mismatch");
}

static void unchecked_on_other_record(void)
{
	data_case(unchecked_not_pages_fn, "cannot be unchecked");
}

static void unknown_record_flag(void)
{
	data_case(unknown_flag_fn, "unknown flags 0x8000");
}

static void truncated_stream(void)
{
	data_case(truncate_fn, "peer closed the connection");
}

static void oversized_length(void)
{
	data_case(oversized_fn, "over the 16777216-byte limit");
}

static void bad_checksum(void)
{
	data_case(bad_crc_fn, "checksum mismatch");
}

static void lost_record(void)
{
	data_case(seq_gap_fn, "sequence 4 where 3 was due");
}

static void pages_beyond_ram(void)
{
	data_case(beyond_ram_fn, "beyond guest RAM");
}

static void malformed_run(void)
{
	data_case(wrong_channel_fn, "PAGES record of 3 pages");
}

static void unknown_mandatory_record(void)
{
	data_case(unknown_type_fn, "unknown record type 999");
}

static void foreign_data_channel(void)
{
	struct dest_run d;
	struct mig_conn ctl, data;
	static const uint8_t other[16] = "another-session";

	dest_start(&d);
	struct mig_hello h = hello(MIG_ROLE_CONTROL, 0, session);
	connect_to(&d, &ctl);
	TEST_ASSERT_EQ(mig_handshake_connect(&ctl, (const uint8_t *)TOKEN, strlen(TOKEN), &h), 0);
	h = hello(MIG_ROLE_DATA, 1, other);
	connect_to(&d, &data);
	int r = mig_handshake_connect(&data, (const uint8_t *)TOKEN, strlen(TOKEN), &h);
	TEST_ASSERT(r != 0, "a data channel of another session was accepted");
	dest_refused(&d, "not part of this migration");
	mig_conn_close(&data);
	mig_conn_close(&ctl);
}

static void complete_too_early(void)
{
	struct dest_run d;
	struct mig_conn ctl, data;
	struct mig_complete c = {.rounds = 1, .nr_cpus = 1};

	dest_start(&d);
	open_both(&d, &ctl, &data);
	TEST_ASSERT_EQ(mig_send_rec(&ctl, MIG_REC_COMPLETE, &c, sizeof(c)), 0);
	dest_refused(&d, "COMPLETE before all vCPU, VM and device state");
	mig_conn_close(&data);
	mig_conn_close(&ctl);
}

static void cpu_index_out_of_range(void)
{
	struct dest_run d;
	struct mig_conn ctl, data;
	struct mig_cpu h = {.index = 5, .size = sizeof(struct x86_cpu_state)};
	struct x86_cpu_state *st = calloc(1, sizeof(*st));
	struct iovec iov[2] = {{&h, sizeof(h)}, {st, sizeof(*st)}};

	dest_start(&d);
	open_both(&d, &ctl, &data);
	TEST_ASSERT_EQ(mig_send_iov(&ctl, MIG_REC_CPU, iov, 2), 0);
	dest_refused(&d, "CPU record for vCPU 5");
	free(st);
	mig_conn_close(&data);
	mig_conn_close(&ctl);
}

/* DISCARD spans that do not fit: not on a word, beyond RAM (2048 pages),
 * a length that does not match the count, empty. */
static void discard_span(uint64_t gfn, uint32_t count, uint32_t words, const char *why)
{
	struct dest_run d;
	struct mig_conn ctl, data;
	struct mig_discard dh = {.gfn = gfn, .count = count};
	uint64_t bits[4] = {~0ULL, ~0ULL, ~0ULL, ~0ULL};
	struct iovec iov[2] = {{&dh, sizeof(dh)}, {bits, words * 8}};

	dest_start(&d);
	open_both(&d, &ctl, &data);
	TEST_ASSERT_EQ(mig_send_iov(&ctl, MIG_REC_DISCARD, iov, 2), 0);
	dest_refused(&d, why);
	mig_conn_close(&data);
	mig_conn_close(&ctl);
}

/* POSTCOPY with a flag this destination does not know. */
static void postcopy_unknown_flag(void)
{
	struct dest_run d;
	struct mig_conn ctl, data;
	struct mig_postcopy pc = {.flags = 2};

	dest_start(&d);
	open_both(&d, &ctl, &data);
	TEST_ASSERT_EQ(mig_send_rec(&ctl, MIG_REC_POSTCOPY, &pc, sizeof(pc)), 0);
	dest_refused(&d, "POSTCOPY with flags 0x2");
	mig_conn_close(&data);
	mig_conn_close(&ctl);
}

static void discard_out_of_range(void)
{
	discard_span(2000, 48, 1, "DISCARD of 48 pages at 2000");
	discard_span(1984, 128, 2, "DISCARD of 128 pages at 1984");
	discard_span(4096, 64, 1, "DISCARD of 64 pages at 4096");
	discard_span(0, 64, 2, "DISCARD of 64 pages at 0 in 32 bytes");
	discard_span(0, 0, 0, "DISCARD of 0 pages at 0");
}

/* The record layer on a socket pair: optional unknown records are skipped,
 * ERROR records become the peer's words. */
static void record_layer(void)
{
	int sv[2];
	struct mig_conn a = MIG_CONN_INIT, b = MIG_CONN_INIT;
	uint32_t v = 0;

	TEST_ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	a.fd = sv[0];
	b.fd = sv[1];
	struct mig_rec_hdr h = {.type = 777,
				.flags = MIG_F_OPTIONAL,
				.len = 3,
				.crc = crc32c(0, "abc", 3),
				.seq = a.tx_seq++};
	send_raw(&a, &h, sizeof(h));
	send_raw(&a, "abc", 3);
	uint32_t x = 42;
	TEST_ASSERT_EQ(mig_send_rec(&a, MIG_REC_ACCEPT, &x, sizeof(x)), 0);
	TEST_ASSERT_EQ(mig_recv_expect(&b, MIG_REC_ACCEPT, &v, sizeof(v)), 0);
	TEST_ASSERT_EQ(v, 42);
	mig_send_error(&a, -EIO, "disk on fire \x01");
	TEST_ASSERT_EQ(mig_recv_expect(&b, MIG_REC_ACCEPT, &v, sizeof(v)), -ECONNABORTED);
	TEST_ASSERT(!strcmp(b.why, "peer: disk on fire ?"), "%s", b.why);
	/* a record of the wrong size for what is expected */
	TEST_ASSERT_EQ(mig_send_rec(&a, MIG_REC_ACCEPT, &x, 2), 0);
	TEST_ASSERT_EQ(mig_recv_expect(&b, MIG_REC_ACCEPT, &v, sizeof(v)), -EPROTO);
	close(sv[0]);
	close(sv[1]);

	char host[64];
	uint16_t port;
	TEST_ASSERT_EQ(mig_parse_addr("tcp:10.1.2.3:7000", host, sizeof(host), &port), 0);
	TEST_ASSERT(!strcmp(host, "10.1.2.3") && port == 7000, "ipv4");
	TEST_ASSERT_EQ(mig_parse_addr("tcp:[::1]:80", host, sizeof(host), &port), 0);
	TEST_ASSERT(!strcmp(host, "::1") && port == 80, "ipv6");
	TEST_ASSERT_EQ(mig_parse_addr("udp:1.2.3.4:5", host, sizeof(host), &port), -EINVAL);
	TEST_ASSERT_EQ(mig_parse_addr("tcp:1.2.3.4:99999", host, sizeof(host), &port), -EINVAL);
	TEST_ASSERT_EQ(mig_parse_addr("tcp::5", host, sizeof(host), &port), -EINVAL);
	TEST_ASSERT_EQ(mig_parse_addr("tcp:host", host, sizeof(host), &port), -EINVAL);
}

int main(int argc, char **argv)
{
	static const struct test_case cases[] = {
	    TEST_CASE(record_layer),
	    TEST_CASE(garbage),
	    TEST_CASE(wrong_version),
	    TEST_CASE(wrong_token),
	    TEST_CASE(bad_layout),
	    TEST_CASE(truncated_stream),
	    TEST_CASE(oversized_length),
	    TEST_CASE(bad_checksum),
	    TEST_CASE(lost_record),
	    TEST_CASE(pages_beyond_ram),
	    TEST_CASE(malformed_run),
	    TEST_CASE(unknown_mandatory_record),
	    TEST_CASE(unchecked_pages_bad_header),
	    TEST_CASE(unchecked_on_other_record),
	    TEST_CASE(unknown_record_flag),
	    TEST_CASE(foreign_data_channel),
	    TEST_CASE(complete_too_early),
	    TEST_CASE(cpu_index_out_of_range),
	    TEST_CASE(discard_out_of_range),
	    TEST_CASE(postcopy_unknown_flag),
	};
	return test_main(argc, argv, cases, ARRAY_SIZE(cases));
}
