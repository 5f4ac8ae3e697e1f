// SPDX-License-Identifier: MIT
/* The migration report as one JSON line, and the token file. */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <string.h>
#include <unistd.h>

#include "migrate.h"

json_object *mig_report_to_json(const struct mig_report *r)
{
	json_object *o = json_object_new_object();

#define S(k, v) json_object_object_add(o, k, json_object_new_string(v))
#define D(k, v) json_object_object_add(o, k, json_object_new_double(v))
#define I(k, v) json_object_object_add(o, k, json_object_new_int64((int64_t)(v)))
	S("mode", r->mode);
	if (r->policy[0])
		S("policy", r->policy);
	S("status", r->status);
	if (r->error[0])
		S("error", r->error);
	D("total_ms", r->total_ms);
	D("downtime_ms", r->downtime_ms);
	D("setup_ms", r->setup_ms);
	D("restore_ms", r->restore_ms);
	if (r->guest_stall_ms >= 0)
		D("guest_stall_ms", r->guest_stall_ms);
	else
		json_object_object_add(o, "guest_stall_ms", NULL);
	I("rounds", r->rounds);
	I("bytes", r->bytes);
	I("pages_sent", r->pages_sent);
	I("pages_resent", r->pages_resent);
	I("zero_pages", r->zero_pages);
	D("throughput_mbps", r->throughput_mbps);
	D("dirty_rate_pps", r->dirty_rate_pps);
	I("throttle_pct", r->throttle_pct);
	S("transport", r->transport);
	if (r->send_mode[0])
		S("send_mode", r->send_mode);
	I("channels", r->channels);
	json_object_object_add(o, "page_checksums", json_object_new_boolean(r->page_checksums));
	S("dirty_track", r->dirty_track);
	S("backend", r->backend);
	I("mem_bytes", r->mem_size);
	I("vcpus", r->nr_vcpus);
	if (r->nr_timeline) {
		json_object *tl = json_object_new_array();
		for (uint32_t k = 0; k < r->nr_timeline; k++) {
			const struct mig_round_rec *t = &r->timeline[k];
			json_object *e = json_object_new_object();
			json_object_object_add(e, "start_ms", json_object_new_double(t->start_ms));
			json_object_object_add(e, "end_ms", json_object_new_double(t->end_ms));
			json_object_object_add(e, "pages",
					       json_object_new_int64((int64_t)t->pages));
			json_object_object_add(e, "bytes",
					       json_object_new_int64((int64_t)t->bytes));
			json_object_object_add(e, "dirty_pages",
					       json_object_new_int64((int64_t)t->dirty_pages));
			json_object_object_add(e, "throttle_pct",
					       json_object_new_int64(t->throttle_pct));
			json_object_object_add(e, "stopped", json_object_new_boolean(t->stopped));
			json_object_array_add(tl, e);
		}
		json_object_object_add(o, "timeline", tl);
	}
	if (!strcmp(r->mode, "postcopy") || !strcmp(r->mode, "hybrid")) {
		D("postcopy_ms", r->postcopy_ms);
		I("faults", r->faults);
		I("pages_pulled", r->pages_pulled);
		static const char *const q[5] = {"fault_p50_us", "fault_p90_us", "fault_p99_us",
						 "fault_p999_us", "fault_max_us"};
		for (int k = 0; k < 5; k++)
			I(q[k], r->fault_lat_us[k]);
		I("pages_prefetched", r->pages_prefetched);
		I("pages_placed_twice", r->pages_twice);
		if (r->tail_speed_pct >= 0)
			D("tail_speed_pct", r->tail_speed_pct);
		if (r->push_yields)
			json_object_object_add(o, "push_yields", json_object_new_boolean(true));
	}
	if (!strcmp(r->mode, "postcopy") || !strcmp(r->mode, "hybrid") || r->recoveries) {
		I("recoveries", r->recoveries);
		D("recover_wait_ms", r->recover_wait_ms);
	}
	if (!strcmp(r->mode, "memsvc")) {
		if (r->memsvc_cache[0]) /* the source's choice */
			S("memsvc_cache", r->memsvc_cache);
		I("discarded_pages", r->discarded);
		I("written_back_pages", r->written_back);
		I("written_paused_pages", r->written_paused);
		I("hot_pages", r->hot_pages);
		if (r->retaken)
			json_object_object_add(o, "namespace_retaken",
					       json_object_new_boolean(true));
	}
	if (r->paused_at_ms >= 0)
		D("paused_at_ms", r->paused_at_ms);
	if (r->resumed_at_ms >= 0)
		D("resumed_at_ms", r->resumed_at_ms);
#undef S
#undef D
#undef I
	return o;
}

void mig_report_json(const struct mig_report *r, FILE *f)
{
	json_object *o = mig_report_to_json(r);

	fprintf(f, "%s\n",
		json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
						      JSON_C_TO_STRING_NOSLASHESCAPE));
	fflush(f);
	json_object_put(o);
}

int mig_read_token(const char *path, uint8_t *token, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, token, MIG_TOKEN_MAX);
	close(fd);
	if (n < 0)
		return -errno;
	size_t l = (size_t)n;
	for (size_t i = 0; i < (size_t)n; i++)
		if (token[i] == '\n') {
			l = i;
			break;
		}
	if (l < 16 || (l == MIG_TOKEN_MAX && (size_t)n == MIG_TOKEN_MAX))
		return -EINVAL;
	*len = l;
	return 0;
}
