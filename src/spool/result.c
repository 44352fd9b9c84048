/* result.c: result records with jansson. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spool/result.h"
#include "spool/util.h"

static double
r3(double x)
{
	return round(x * 1000.0) / 1000.0;
}

static void
set_common(json_t *o, const char *id, const char *status)
{
	json_object_set_new(o, "id", json_string(id));
	json_object_set_new(o, "status", json_string(status));
}

static json_t *
worker_json(void)
{
	return json_pack("{s:s, s:i}", "host", util_hostname(), "pid", (int)getpid());
}

static json_t *
error_json(const struct sd_error *err, int line)
{
	json_t *e = json_object();

	json_object_set_new(e, "code", json_integer(err->code));
	json_object_set_new(e, "message", json_string(err->message));
	if (err->field[0] != '\0')
		json_object_set_new(e, "field", json_string(err->field));
	if (line > 0)
		json_object_set_new(e, "line", json_integer(line));
	return e;
}

static json_t *
parameters(const struct sd_job *job, int seed_was_random)
{
	json_t *p;

	if (job == NULL)
		return json_null();
	p = job_parameters_json(job);
	if (p != NULL)
		json_object_set_new(p, "seed_random", json_boolean(seed_was_random));
	return p ? p : json_null();
}

json_t *
result_record(const char *id, const struct sd_job *job,
    const struct runjob_result *res)
{
	json_t *o = json_object(), *imgs = json_array(), *t;
	char when[40];
	int i, per = 0;

	if (o == NULL || imgs == NULL) {
		json_decref(o);
		json_decref(imgs);
		return NULL;
	}
	set_common(o, id, runjob_status_name(res->status));
	for (i = 0; i < res->nimages; i++) {
		const struct runjob_image *im = &res->images[i];
		json_array_append_new(imgs, json_pack("{s:s, s:I, s:i, s:i, s:s}",
		    "path", im->path, "seed", (json_int_t)im->seed, "width", im->width,
		    "height", im->height, "sha256", im->sha256));
	}
	json_object_set_new(o, "images", imgs);
	json_object_set_new(o, "parameters", parameters(job, res->seed_was_random));
	json_object_set_new(o, "model", res->model_path ? json_pack("{s:s, s:s?}",
	    "path", res->model_path, "arch", res->arch) : json_null());
	per = res->steps_done;
	t = json_pack("{s:f, s:f, s:f, s:f, s:f}", "load_s", r3(res->load_s),
	    "encode_s", r3(res->encode_s), "sample_s", r3(res->sample_s),
	    "decode_s", r3(res->decode_s), "total_s", r3(res->total_s));
	json_object_set_new(t, "per_step_s", per > 0 ?
	    json_real(round(res->sample_s / per * 1e5) / 1e5) : json_null());
	json_object_set_new(o, "timings", t);
	json_object_set_new(o, "worker", worker_json());
	util_rfc3339(res->started, when, sizeof when);
	json_object_set_new(o, "started", json_string(when));
	util_rfc3339(res->finished, when, sizeof when);
	json_object_set_new(o, "finished", json_string(when));
	json_object_set_new(o, "metadata", job && job->metadata ?
	    json_incref(job->metadata) : json_null());
	if (res->nwarnings > 0) {
		json_t *w = json_array();
		for (i = 0; w != NULL && i < res->nwarnings; i++)
			json_array_append_new(w, json_string(res->warnings[i]));
		json_object_set_new(o, "warnings", w);
	}
	if (res->status != RUNJOB_DONE)
		json_object_set_new(o, "error", error_json(&res->err, res->err_line));
	return o;
}

json_t *
result_rejected(const char *id, const struct sd_job *job,
    const struct sd_error *err, int line)
{
	json_t *o = json_object();
	char when[40];

	if (o == NULL)
		return NULL;
	set_common(o, id, "failed");
	json_object_set_new(o, "images", json_array());
	json_object_set_new(o, "parameters", json_null());
	json_object_set_new(o, "model", json_null());
	json_object_set_new(o, "timings", json_null());
	json_object_set_new(o, "worker", worker_json());
	util_rfc3339(util_now(), when, sizeof when);
	json_object_set_new(o, "finished", json_string(when));
	json_object_set_new(o, "metadata", job && job->metadata ?
	    json_incref(job->metadata) : json_null());
	json_object_set_new(o, "error", error_json(err, line));
	return o;
}

void
result_set_callback(json_t *record, const struct callback_outcome *o)
{
	json_object_set_new(record, "callback", json_pack("{s:s, s:i, s:s?, s:s, s:i}",
	    "status", o->status, "attempts", o->attempts,
	    "last_error", o->last_error[0] ? o->last_error : NULL,
	    "delivery_id", o->delivery_id, "http_status", o->http_status));
}

char *
result_callback_body(json_t *record, int include_images, size_t *len)
{
	json_t *copy = json_deep_copy(record), *imgs;
	size_t i;
	char *s;

	if (copy == NULL)
		return NULL;
	json_object_del(copy, "callback");
	imgs = json_object_get(copy, "images");
	for (i = 0; include_images && i < json_array_size(imgs); i++) {
		json_t *im = json_array_get(imgs, i);
		const char *path = json_string_value(json_object_get(im, "path"));
		size_t n;
		char *png = path ? util_read_file(path, (size_t)1 << 30, 0, &n,
		    NULL) : NULL;
		char *b64 = png ? util_base64_encode(png, n) : NULL;
		json_object_set_new(im, "png_base64", b64 ? json_string(b64) : json_null());
		free(png);
		free(b64);
	}
	s = json_dumps(copy, SD_JSON_LINE);
	json_decref(copy);
	if (s != NULL && len != NULL)
		*len = strlen(s);
	return s;
}

char *
result_text(json_t *record, size_t *len)
{
	char *s = json_dumps(record, SD_JSON_FILE), *t;
	size_t n;

	if (s == NULL)
		return NULL;
	n = strlen(s);
	if ((t = realloc(s, n + 2)) == NULL) {
		free(s);
		return NULL;
	}
	t[n] = '\n';
	t[n + 1] = '\0';
	if (len != NULL)
		*len = n + 1;
	return t;
}
