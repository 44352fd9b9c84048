/* test_params.c: the table of job parameters (src/spool/params.c): the
 * table itself, that it drives job files, flags, the configuration, the
 * records and the PNG text alike, the model's defaults, and that strength
 * reaches the scheduler as diffusers computes it (int(steps * strength) in
 * double) for every steps 1..100 and strength 0.01..1.00. */
#include "config.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sample/scheduler.h"
#include "spool/conf.h"
#include "spool/job.h"
#include "spool/metadata.h"
#include "spool/params.h"
#include "tap.h"

static struct sd_config cfg;

/* Parse text as a job; 0 or -1 (err filled). */
static int
parse(struct sd_job *j, const struct sd_config *c, const char *text,
    struct sd_error *err)
{
	job_init(j, c);
	sd_error_clear(err);
	return job_parse(j, c, text, strlen(text), "p.yaml", "/tmp", "p", err, NULL);
}

static size_t
storage_size(enum param_storage s)
{
	switch (s) {
	case PARAM_S_INT: return sizeof(int);
	case PARAM_S_DOUBLE: return sizeof(double);
	case PARAM_S_FLOAT: return sizeof(float);
	case PARAM_S_U64: return sizeof(uint64_t);
	case PARAM_S_STRING: return sizeof(char *);
	case PARAM_NONE: return 0;
	}
	return 0;
}

/* The storage a type needs in struct job_params. */
static int
storage_fits(const struct param_def *d)
{
	switch (d->type) {
	case PARAM_TEXT:
	case PARAM_PATH:
	case PARAM_LORAS:
		return d->storage == PARAM_S_STRING;
	case PARAM_INT:
	case PARAM_CHOICE:
	case PARAM_BOOL:
		return d->storage == PARAM_S_INT;
	case PARAM_NUMBER:
		return d->storage == PARAM_S_DOUBLE;
	case PARAM_SEED:
		return d->storage == PARAM_S_U64;
	}
	return 0;
}

static void
table(void)
{
	struct job_params v;
	struct sd_error err;
	int ok = 1, fields[JF_COUNT_] = {0};
	size_t i, k;

	for (i = 0; i < params_count; i++) {
		const struct param_def *d = &params_table[i];

		if (!storage_fits(d) || d->size != storage_size(d->storage)) {
			tap_diag("%s: storage %d size %zu does not fit its type", d->name,
			    d->storage, d->size);
			ok = 0;
		}
		/* what the engine gets: the same kind of value; a double may
		 * become a float only where the engine computes in float32 */
		if (d->sd_storage != PARAM_NONE &&
		    (d->sd_size != storage_size(d->sd_storage) ||
		    (d->storage == PARAM_S_DOUBLE ? d->sd_storage != PARAM_S_DOUBLE &&
		    d->sd_storage != PARAM_S_FLOAT : d->sd_storage != d->storage))) {
			tap_diag("%s: struct sd_params holds it as another type", d->name);
			ok = 0;
		}
		if (d->field >= JF_OUTPUT || fields[d->field]++ ||
		    strcmp(job_field_name(d->field), d->name) != 0) {
			tap_diag("%s: its field is wrong or shared", d->name);
			ok = 0;
		}
		if (d->type == PARAM_CHOICE && (params_choices(d) < 1 || d->choice_name == NULL)) {
			tap_diag("%s: a choice without names", d->name);
			ok = 0;
		}
		if ((d->flags & PARAM_MODEL_DEFAULT) && (d->default_text == NULL ||
		    strcmp(d->default_text, "auto") != 0 || d->sd_storage == PARAM_NONE)) {
			tap_diag("%s: a model default is \"auto\" and goes to the engine",
			    d->name);
			ok = 0;
		}
		for (k = 0; k < i; k++) {
			const struct param_def *e = &params_table[k];
			if (strcmp(d->name, e->name) == 0 ||
			    (d->flag && e->flag && strcmp(d->flag, e->flag) == 0) ||
			    (d->short_flag && d->short_flag == e->short_flag) ||
			    (d->png && e->png && (strcmp(d->png, e->png) == 0 ||
			    d->png_rank == e->png_rank))) {
				tap_diag("%s and %s share a name, flag or PNG name", d->name,
				    e->name);
				ok = 0;
			}
		}
		if (params_find(d->name) != d || params_by_field(d->field) != d)
			ok = 0;
	}
	for (i = 0; i < JF_OUTPUT; i++)
		if (fields[i] != 1) {
			tap_diag("field %zu (%s) has no entry", i,
			    job_field_name((enum job_field)i));
			ok = 0;
		}
	tap_ok(ok, "the table: one entry per job parameter, storage fits the type, "
	    "names, flags and PNG names unique");

	/* The built-in defaults are valid values (an unset model default
	 * passes until the model is known). */
	params_init(&v);
	ok = 1;
	for (i = 0; i < params_count; i++) {
		sd_error_clear(&err);
		if (params_table[i].flags & PARAM_REQUIRED)
			continue;
		if (params_check(&params_table[i], &v, &cfg.limits, &err) < 0) {
			tap_diag("%s", err.message);
			ok = 0;
		}
		if ((params_table[i].flags & PARAM_MODEL_DEFAULT) &&
		    params_is_set(&params_table[i], &v)) {
			tap_diag("%s is set by default", params_table[i].name);
			ok = 0;
		}
	}
	tap_ok(ok, "the built-in defaults pass the checks; the model's are unset");
	params_free(&v);
}

/* A value of d other than its default, as a job file writes it. */
static void
sample_text(const struct param_def *d, char *buf, size_t size)
{
	switch (d->type) {
	case PARAM_TEXT:
		snprintf(buf, size, "a \"robot\", oil: paint %s", d->name);
		break;
	case PARAM_PATH:
		snprintf(buf, size, "/data/%s.safetensors", d->name);
		break;
	case PARAM_INT: {
		long long hi = (long long)d->max;
		if (d->limit == PARAM_LIMIT_WIDTH || d->limit == PARAM_LIMIT_HEIGHT)
			hi = 1024;
		else if (d->limit == PARAM_LIMIT_STEPS)
			hi = cfg.limits.steps;
		else if (d->limit == PARAM_LIMIT_COUNT)
			hi = cfg.limits.count;
		long long x = ((long long)d->min + hi) / 2;
		if (d->flags & PARAM_MULTIPLE_OF_8)
			x -= x % 8;
		if (d->field == JF_HEIGHT)
			x -= 64;	/* not square: Size is WxH */
		snprintf(buf, size, "%lld", x);
		break;
	}
	case PARAM_NUMBER:
		snprintf(buf, size, "%g", d->min + (d->max - d->min) * 0.625);
		break;
	case PARAM_CHOICE:
		snprintf(buf, size, "%s", d->choice_name(params_choices(d) - 1));
		break;
	case PARAM_SEED:
		snprintf(buf, size, "1234567");
		break;
	case PARAM_LORAS:
		snprintf(buf, size, "/data/%s.safetensors:0.5", d->name);
		break;
	case PARAM_BOOL:
		snprintf(buf, size, "%s", d->default_text != NULL &&
		    strcmp(d->default_text, "true") == 0 ? "false" : "true");
		break;
	}
}

/* Every parameter: YAML -> job -> JSON (record, sdbatch chunk) and PNG
 * text; the flag's text gives the same value as the job file's. */
static void
round_trip(void)
{
	struct sd_job j;
	struct sd_error err;
	char yaml[8192], val[256], got[400], why[SD_ERROR_MAX], *png, *chunk;
	size_t i, n = 0;
	int ok = 1, ok_json = 1, ok_png = 1, ok_flag = 1;
	json_t *o, *rec;

	for (i = 0; i < params_count; i++) {
		json_t *q;
		char *qs;

		sample_text(&params_table[i], val, sizeof val);
		q = json_string(val);
		qs = json_dumps(q, JSON_ENCODE_ANY);
		/* quoted for the strings, plain for the rest, as people write */
		n += (size_t)snprintf(yaml + n, sizeof yaml - n, "%s: %s\n",
		    params_table[i].name, params_table[i].type == PARAM_TEXT ||
		    params_table[i].type == PARAM_PATH ? qs : val);
		free(qs);
		json_decref(q);
	}
	if (!tap_ok(parse(&j, &cfg, yaml, &err) == 0, "a job giving every parameter "
	    "parses")) {
		tap_diag("%s\n%s", err.message, yaml);
		job_free(&j);
		return;
	}
	rec = job_parameters_json(&j);
	chunk = metadata_sdbatch_json(&j, 0, 1234567, "sd15");
	o = chunk ? json_loads(chunk, 0, NULL) : NULL;
	png = metadata_parameters(&j, 1234567, "my-model");
	for (i = 0; i < params_count; i++) {
		const struct param_def *d = &params_table[i];
		struct job_params fv;
		json_t *a = json_object_get(rec, d->name), *b = json_object_get(o, d->name);
		char want[480], *aj, *ft;

		sample_text(d, val, sizeof val);
		params_text(d, &j.params, got, sizeof got);
		if (strcmp(got, val) != 0) {
			tap_diag("%s: the job holds \"%s\", the file \"%s\"", d->name, got, val);
			ok = 0;
		}
		/* JSON: the record's and the chunk's, the value's type */
		aj = a ? json_dumps(a, JSON_ENCODE_ANY) : NULL;
		if (a == NULL || b == NULL || !json_equal(a, b) ||
		    (d->type == PARAM_INT && json_integer_value(a) != atoll(val)) ||
		    (d->type == PARAM_NUMBER && json_real_value(a) != atof(val)) ||
		    ((d->type == PARAM_CHOICE || d->type == PARAM_TEXT ||
		    d->type == PARAM_PATH) && strcmp(json_string_value(a), val) != 0) ||
		    (d->type == PARAM_SEED && json_integer_value(a) != 1234567) ||
		    (d->type == PARAM_BOOL && (!json_is_boolean(a) ||
		    json_is_true(a) != (strcmp(val, "true") == 0)))) {
			tap_diag("%s: JSON %s", d->name, aj ? aj : "missing");
			ok_json = 0;
		}
		free(aj);
		/* PNG text: A1111's name and value */
		if (d->png != NULL) {
			if (d->type == PARAM_CHOICE)
				snprintf(got, sizeof got, "%s", d->choice_png ?
				    d->choice_png(params_choices(d) - 1) : val);
			else if (d->type == PARAM_BOOL)	/* Python's str() */
				snprintf(got, sizeof got, "%s", strcmp(val, "true") == 0 ?
				    "True" : "False");
			else if (d->type == PARAM_PATH)
				snprintf(got, sizeof got, "my-model");
			else if (d->type == PARAM_NUMBER && strchr(val, '.') == NULL)
				snprintf(got, sizeof got, "%s.0", val);
			else if (d->png_with != JF_PROMPT) {
				char w[64];
				params_text(params_by_field(d->png_with), &j.params, w, sizeof w);
				snprintf(got, sizeof got, "%sx%s", val, w);
			} else
				snprintf(got, sizeof got, "%s", val);
			snprintf(want, sizeof want, "%s: %s,", d->png, got);
			if (png == NULL || strstr(png, want) == NULL) {
				tap_diag("%s: \"%s\" is not in the PNG text", d->name, want);
				ok_png = 0;
			}
		}
		/* the flag's text gives the same value */
		if (d->flag != NULL) {
			memset(&fv, 0, sizeof fv);
			if (params_parse_text(d, val, &fv, why, sizeof why) < 0) {
				tap_diag("--%s %s: %s", d->flag, val, why);
				ok_flag = 0;
			} else {
				json_t *fj;
				if (d->flags & PARAM_IMG2IMG)
					fv.init_image = strdup("x.png");
				fj = params_json(d, &fv);
				ft = fj ? json_dumps(fj, JSON_ENCODE_ANY) : NULL;
				if (!json_equal(fj, a)) {
					tap_diag("--%s %s gives %s", d->flag, val, ft ? ft : "?");
					ok_flag = 0;
				}
				free(ft);
				json_decref(fj);
			}
			params_free(&fv);
		}
	}
	tap_ok(ok, "every parameter: the job holds the file's value");
	tap_ok(ok_json, "every parameter: in the result record's and the sdbatch "
	    "chunk's parameters, by its name, typed");
	if (!tap_ok(ok_png, "every parameter with an A1111 name: in the PNG "
	    "parameters text"))
		tap_diag("%s", png ? png : "(null)");
	tap_ok(ok_flag, "every parameter's flag reads its value as the job file does");
	tap_ok(json_object_size(rec) == params_count + 1, "the record's parameters: "
	    "the table's, and output (%zu keys)", json_object_size(rec));
	free(png);
	free(chunk);
	json_decref(o);
	json_decref(rec);
	job_free(&j);
}

/* Flags: what a user may type, and the messages. */
static void
flags(void)
{
	static const struct {
		const char *name, *text, *want;
	} bad[] = {
		{ "width", "", "expected an integer, got null" },
		{ "width", "wide", "expected an integer, got \"wide\"" },
		{ "width", "100", "100 is not a multiple of 8" },
		{ "width", "99999999999999999999999", "out of range" },
		{ "steps", "2.5", "expected an integer" },
		{ "steps", "0", "0 is out of range (1..10000)" },
		{ "guidance_scale", ".nan", "expected a number" },
		{ "guidance_scale", "-1", "out of range" },
		{ "strength", "0", "must be above 0 (0 < strength <= 1)" },
		{ "strength", "1.5", "out of range" },
		{ "seed", "-2", "out of range" },
		{ "seed", "auto", "expected an integer" },
		{ "sampler", "Euler b", "unknown sampler \"Euler b\" (one of: auto, " },
		{ "rng", "auto", "unknown value \"auto\" (one of: cpu, cuda)" },
		{ "clip_skip", "13", "out of range (1..12)" },
		{ "shift", "0", "must be above 0 (0 < shift <= 100)" },
		{ "shift", "-3", "out of range" },
		{ "shift", "many", "expected a number" },
		{ "t5", "yes", "expected true or false, got \"yes\"" },
		{ "t5", "1", "expected true or false" },
		{ "init_image", "a\tb.png", "control characters" },
		{ "sampler", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
		    "unknown sampler \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"" },
	};
	struct job_params v;
	char why[SD_ERROR_MAX];
	size_t i;
	int ok = 1;

	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		const struct param_def *d = params_find(bad[i].name);
		memset(&v, 0, sizeof v);
		why[0] = '\0';
		if (d == NULL || params_parse_text(d, bad[i].text, &v, why, sizeof why) == 0 ||
		    strstr(why, bad[i].want) == NULL || strchr(why, '\n') != NULL) {
			tap_diag("--%s %.20s: \"%s\" (want \"%s\")", d ? d->flag : "?",
			    bad[i].text, why, bad[i].want);
			ok = 0;
		}
		params_free(&v);
	}
	tap_ok(ok, "bad flag values: a message naming the problem, quoting at most "
	    "40 characters of the value");
	memset(&v, 0, sizeof v);
	ok = params_parse_text(params_find("steps"), "auto", &v, why, sizeof why) == 0 &&
	    v.steps == 0 &&
	    params_parse_text(params_find("sampler"), "auto", &v, why, sizeof why) == 0 &&
	    v.sampler == SD_SAMPLER_AUTO &&
	    params_parse_text(params_find("seed"), "-1", &v, why, sizeof why) == 0 &&
	    v.seed_random &&
	    params_parse_text(params_find("prompt"), "null", &v, why, sizeof why) == 0 &&
	    strcmp(v.prompt, "null") == 0 &&
	    params_parse_text(params_find("width"), "512.0", &v, why, sizeof why) == 0 &&
	    v.width == 512;
	tap_ok(ok, "flags: auto, -1, a prompt taken verbatim, 512.0 as a job file reads it");
	params_free(&v);
	memset(&v, 0, sizeof v);
	v.t5 = 1;
	ok = 1;
	for (i = 0; i < params_count; i++) {
		const struct param_def *d = &params_table[i];
		char want[64], got[64];
		struct job_params w;

		/* a flag without an argument sets its value (--no-t5) */
		if (d->flag_value == NULL)
			continue;
		memset(&w, 0, sizeof w);
		if (d->type != PARAM_BOOL || params_parse_text(d, NULL, &v, why, sizeof why) < 0 ||
		    params_parse_text(d, d->flag_value, &w, why, sizeof why) < 0 ||
		    strcmp(params_text(d, &v, got, sizeof got),
		    params_text(d, &w, want, sizeof want)) != 0)
			ok = 0;
		params_free(&w);
	}
	tap_ok(ok && v.t5 == 0 && strcmp(params_find("t5")->flag, "no-t5") == 0,
	    "--no-t5 takes no argument and sets t5: false");
	params_free(&v);
	tap_ok(params_choices(params_find("sampler")) == SD_SAMPLER_COUNT &&
	    params_choices(params_find("prediction")) == 3 &&
	    params_choices(params_find("width")) == 0, "the choices come from the "
	    "engine's name functions");
}

/* The configuration's defaults: the PARAM_CONFIG entries, and only they. */
static void
config_defaults(void)
{
	struct sd_config c;
	struct sd_job j;
	struct sd_error err;
	char yaml[4096], val[256], got[256];
	size_t i, n = 0;
	int ok = 1;

	n += (size_t)snprintf(yaml, sizeof yaml, "defaults:\n");
	for (i = 0; i < params_count; i++) {
		const struct param_def *d = &params_table[i];
		if (!(d->flags & PARAM_CONFIG))
			continue;
		sample_text(d, val, sizeof val);
		/* quoted strings, plain values for the rest */
		n += (size_t)snprintf(yaml + n, sizeof yaml - n,
		    d->type == PARAM_TEXT ? "  %s: '%s'\n" : "  %s: %s\n", d->name, val);
	}
	config_init(&c);
	sd_error_clear(&err);
	if (!tap_ok(config_parse(&c, yaml, strlen(yaml), "c.yaml", &err) == 0,
	    "defaults: takes every configurable parameter"))
		tap_diag("%s\n%s", err.message, yaml);
	job_init(&j, &c);
	for (i = 0; i < params_count; i++) {
		const struct param_def *d = &params_table[i];
		if (!(d->flags & PARAM_CONFIG))
			continue;
		sample_text(d, val, sizeof val);
		if (strcmp(params_text(d, &j.params, got, sizeof got), val) != 0) {
			tap_diag("defaults.%s: the job gets \"%s\", not \"%s\"", d->name,
			    got, val);
			ok = 0;
		}
	}
	tap_ok(ok, "a job starts from the configured defaults");
	job_free(&j);
	config_free(&c);

	ok = 1;
	for (i = 0; i < params_count; i++) {
		const struct param_def *d = &params_table[i];
		if (d->flags & PARAM_CONFIG)
			continue;
		snprintf(yaml, sizeof yaml, "defaults: { %s: x }\n", d->name);
		config_init(&c);
		sd_error_clear(&err);
		if (config_parse(&c, yaml, strlen(yaml), "c.yaml", &err) == 0 ||
		    strstr(err.message, "unknown key") == NULL) {
			tap_diag("defaults.%s: %s", d->name, err.message);
			ok = 0;
		}
		config_free(&c);
	}
	tap_ok(ok, "defaults: refuses the others (prompt, model, seed, files)");
	config_init(&c);
	sd_error_clear(&err);
	tap_ok(config_parse(&c, "defaults: { width: 100 }\n", 25, "c.yaml", &err) < 0 &&
	    err.code == SD_ECONFIG && strstr(err.message, "c.yaml:1: defaults.width: "
	    "100 is not a multiple of 8"), "a bad default names the key: %s", err.message);
	config_free(&c);
	config_init(&c);
	sd_error_clear(&err);
	tap_ok(config_parse(&c, "defaults: { prediction: v, spacing: trailing, "
	    "steps: auto }\n", 60, "c.yaml", &err) == 0 &&
	    c.defaults.prediction == SD_PREDICTION_V &&
	    c.defaults.spacing == SD_SPACING_TRAILING && c.defaults.steps == 0,
	    "defaults: prediction, spacing, and auto");
	config_free(&c);
}

/* The model's defaults: unset until resolved, then the effective values
 * everywhere; the limits apply to them too. */
static void
model_defaults(void)
{
	struct sd_config c;
	struct sd_job j;
	struct sd_error err;
	struct sd_params p;
	json_t *o;
	char *png;

	tap_ok(parse(&j, &cfg, "prompt: a\nwidth: auto\nsteps: auto\nsampler: auto\n"
	    "guidance_scale: auto\nprediction: auto\nspacing: auto\n", &err) == 0 &&
	    j.width == 0 && j.steps == 0 && j.sampler == SD_SAMPLER_AUTO &&
	    j.guidance_scale < 0, "auto: the model's default");
	o = job_parameters_json(&j);
	tap_ok(json_is_null(json_object_get(o, "width")) &&
	    json_is_null(json_object_get(o, "sampler")) &&
	    json_is_null(json_object_get(o, "guidance_scale")) &&
	    json_integer_value(json_object_get(o, "count")) == 1,
	    "a model default not known yet is null in the record");
	json_decref(o);

	/* As the runner does: to the engine, resolve, back. */
	sd_params_init(&p);
	params_to_sd(&j.params, &p);
	tap_ok(p.width == 0 && p.height == 0 && p.steps == 0 && p.guidance_scale < 0 &&
	    p.sampler == SD_SAMPLER_AUTO && p.prediction == SD_PREDICTION_AUTO &&
	    p.spacing == SD_SPACING_AUTO && strcmp(p.prompt, "a") == 0 &&
	    p.negative_prompt == NULL, "the engine gets the model-default "
	    "markers (and no negative prompt: NULL)");
	/* what sd_params_resolve does for an SD 2.x 768-v model */
	p.width = p.height = 768;
	p.steps = 20;
	p.guidance_scale = 7.5f;
	p.sampler = SD_SAMPLER_DDIM;
	p.prediction = SD_PREDICTION_V;
	p.spacing = SD_SPACING_LEADING;
	params_from_sd(&j.params, &p);
	o = job_parameters_json(&j);
	png = metadata_parameters(&j, 5, "v2-1_768-ema-pruned");
	tap_ok(json_integer_value(json_object_get(o, "width")) == 768 &&
	    json_real_value(json_object_get(o, "guidance_scale")) == 7.5 &&
	    strcmp(json_string_value(json_object_get(o, "sampler")), "ddim") == 0 &&
	    strcmp(json_string_value(json_object_get(o, "prediction")), "v") == 0 &&
	    strcmp(json_string_value(json_object_get(o, "spacing")), "leading") == 0,
	    "after resolving: the record has the effective values");
	if (!tap_ok(png && strstr(png, "Steps: 20, Sampler: DDIM, Schedule type: "
	    "Normal, CFG scale: 7.5, Seed: 5, Size: 768x768, Model: "
	    "v2-1_768-ema-pruned, RNG: CPU"), "and the PNG text"))
		tap_diag("%s", png ? png : "(null)");
	free(png);
	json_decref(o);
	config_init(&c);
	c.limits.width = 512;
	sd_error_clear(&err);
	tap_ok(job_check(&j, &c, &err) < 0 && strcmp(err.field, "width") == 0 &&
	    strstr(err.message, "width: 768 is out of range (64..512)"),
	    "the model's size over the configured limit fails naming the field: %s",
	    err.message);
	config_free(&c);
	job_free(&j);

	/* A value the job gives stays as given (no float round trip). */
	tap_ok(parse(&j, &cfg, "prompt: a\nguidance_scale: 7.3\n", &err) == 0, "7.3");
	sd_params_init(&p);
	params_to_sd(&j.params, &p);
	tap_ok(p.guidance_scale == 7.3f, "guidance reaches the engine in float32");
	p.width = p.height = 512;
	params_from_sd(&j.params, &p);
	tap_ok(j.guidance_scale == 7.3 && j.width == 512, "a given value is kept, an "
	    "unset one resolved");
	job_free(&j);

	tap_ok(parse(&j, &cfg, "prompt: a\nprediction: v\nspacing: trailing\n",
	    &err) == 0 && j.prediction == SD_PREDICTION_V &&
	    j.spacing == SD_SPACING_TRAILING, "prediction: v, spacing: trailing");
	sd_params_init(&p);
	params_to_sd(&j.params, &p);
	tap_ok(p.prediction == SD_PREDICTION_V && p.spacing == SD_SPACING_TRAILING,
	    "and they reach the engine");
	job_free(&j);
	tap_ok(parse(&j, &cfg, "prompt: a\nprediction: x0\n", &err) < 0 &&
	    strcmp(err.field, "prediction") == 0 &&
	    strstr(err.message, "p.yaml:2: prediction: unknown value \"x0\" (one of: "
	    "auto, epsilon, v)"), "a bad prediction: %s", err.message);
	job_free(&j);
	tap_ok(parse(&j, &cfg, "prompt: a\nspacing: even\n", &err) < 0 &&
	    strcmp(err.field, "spacing") == 0 && strstr(err.message, "leading, "
	    "linspace, trailing"), "a bad spacing: %s", err.message);
	job_free(&j);
	tap_ok(parse(&j, &cfg, "prompt: a\nseed: auto\n", &err) < 0 &&
	    strcmp(err.field, "seed") == 0, "auto is only for the model's defaults");
	job_free(&j);
}

/* shift and t5 (SD3): shift is the model's until resolved, and only a
 * flow model resolves it, so that other models' records and PNG text
 * leave it out; t5 is true unless a job says false. */
static void
flow_fields(void)
{
	struct sd_config c;
	struct sd_job j;
	struct sd_error err;
	struct sd_params p;
	json_t *o;
	char *png;

	tap_ok(parse(&j, &cfg, "prompt: a\n", &err) == 0 && j.shift == 0 && j.t5 == 1,
	    "by default: shift the model's, t5 true");
	sd_params_init(&p);
	p.shift = -1;
	p.t5 = -1;
	params_to_sd(&j.params, &p);
	tap_ok(p.shift == 0 && p.t5 == 1, "the engine gets shift 0 (the model's) and t5 1");
	/* a model that is not a flow model leaves shift unresolved */
	p.width = p.height = 512;
	p.steps = 20;
	p.guidance_scale = 7.5f;
	p.sampler = SD_SAMPLER_EULER;
	p.prediction = SD_PREDICTION_EPSILON;
	p.spacing = SD_SPACING_LINSPACE;
	params_from_sd(&j.params, &p);
	o = job_parameters_json(&j);
	png = metadata_parameters(&j, 5, "m");
	tap_ok(json_is_null(json_object_get(o, "shift")) &&
	    json_is_true(json_object_get(o, "t5")) && png != NULL &&
	    strstr(png, "Shift:") == NULL && strstr(png, "T5:") == NULL,
	    "SD 1.x: shift null in the record, neither Shift nor T5 in the PNG text");
	free(png);
	json_decref(o);
	job_free(&j);

	/* SD3: resolved to the model's 3.0 */
	tap_ok(parse(&j, &cfg, "prompt: a\nshift: auto\nt5: false\n", &err) == 0 &&
	    j.shift == 0 && j.t5 == 0, "shift: auto, t5: false %s", err.message);
	sd_params_init(&p);
	params_to_sd(&j.params, &p);
	tap_ok(p.t5 == 0, "t5: false reaches the engine");
	p.width = p.height = 1024;
	p.steps = 28;
	p.guidance_scale = 7.0f;
	p.sampler = SD_SAMPLER_EULER;
	p.shift = 3.0;
	params_from_sd(&j.params, &p);
	o = job_parameters_json(&j);
	png = metadata_parameters(&j, 5, "sd3_medium");
	tap_ok(json_real_value(json_object_get(o, "shift")) == 3.0 &&
	    json_is_false(json_object_get(o, "t5")),
	    "SD3 resolved: shift 3.0 and t5 false in the record");
	if (!tap_ok(png != NULL && strstr(png, "Shift: 3.0, T5: False, Version: ") != NULL,
	    "and \"Shift: 3.0, T5: False\" in the PNG text"))
		tap_diag("%s", png ? png : "(null)");
	free(png);
	json_decref(o);
	job_free(&j);

	tap_ok(parse(&j, &cfg, "prompt: a\nshift: 2.5\n", &err) == 0 && j.shift == 2.5,
	    "shift: 2.5");
	sd_params_init(&p);
	params_to_sd(&j.params, &p);
	p.shift = 3.0;	/* what resolving must not do to a given value */
	params_from_sd(&j.params, &p);
	tap_ok(j.shift == 2.5, "a given shift is kept");
	job_free(&j);
	tap_ok(parse(&j, &cfg, "prompt: a\nshift: 0\n", &err) < 0 &&
	    strcmp(err.field, "shift") == 0 && strstr(err.message, "p.yaml:2: shift: "
	    "must be above 0"), "shift: 0 is refused: %s", err.message);
	job_free(&j);
	tap_ok(parse(&j, &cfg, "prompt: a\nshift: 101\n", &err) < 0 &&
	    strcmp(err.field, "shift") == 0, "shift: 101 is refused: %s", err.message);
	job_free(&j);
	tap_ok(parse(&j, &cfg, "prompt: a\nt5: no\n", &err) < 0 &&
	    strcmp(err.field, "t5") == 0 && strstr(err.message, "p.yaml:2: t5: expected "
	    "true or false, got \"no\""), "t5: no is refused: %s", err.message);
	job_free(&j);
	tap_ok(parse(&j, &cfg, "prompt: a\nt5: auto\n", &err) < 0 &&
	    strcmp(err.field, "t5") == 0, "t5: auto is refused: %s", err.message);
	job_free(&j);

	config_init(&c);
	sd_error_clear(&err);
	tap_ok(config_parse(&c, "defaults: { shift: 2.0, t5: false }\n", 36, "c.yaml",
	    &err) == 0 && c.defaults.shift == 2.0 && c.defaults.t5 == 0,
	    "defaults: shift and t5 %s", err.message);
	config_free(&c);
	config_init(&c);
	sd_error_clear(&err);
	tap_ok(config_parse(&c, "defaults: { t5: 0 }\n", 20, "c.yaml", &err) < 0 &&
	    err.code == SD_ECONFIG && strstr(err.message, "defaults.t5: expected true or "
	    "false"), "a bad defaults.t5 names the key: %s", err.message);
	config_free(&c);
}

/* UNet calls of the scheduler for a job text: -1 when set_strength says
 * no step is left. */
static int
calls_of(const char *text, enum sd_sampler sampler, double *strength)
{
	struct sd_job j;
	struct sd_error err;
	struct sd_params p;
	struct sched_config sc;
	struct sd_scheduler *s;
	int n = -2;

	if (parse(&j, &cfg, text, &err) < 0) {
		tap_diag("%s", err.message);
		job_free(&j);
		return -2;
	}
	sd_params_init(&p);
	params_to_sd(&j.params, &p);
	*strength = p.strength;
	sched_config_sd15(&sc);
	sd_error_clear(&err);
	s = sd_scheduler_new(sampler, SD_SCHEDULE_NORMAL, &sc, p.steps, &err);
	if (s != NULL)
		n = sd_scheduler_set_strength(s, p.strength, &err) < 0 ? -1 :
		    sd_scheduler_calls(s);
	sd_scheduler_free(s);
	job_free(&j);
	return n;
}

static void
strength(void)
{
	static const struct {
		int steps;
		const char *strength;
		int want;	/* diffusers: int(steps * strength) in double */
	} cases[] = {
		{ 10, "0.7", 7 }, { 10, "0.9", 9 }, { 20, "0.7", 14 }, { 50, "0.58", 28 },
		{ 10, "0.75", 7 }, { 4, "1", 4 },
	};
	const char *src = getenv("SDBATCH_SRCDIR");
	char text[256], path[4096], line[1024];
	size_t i;
	double st;
	FILE *f;
	int rows = 0, bad = 0, ddim_bad = 0;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		int n;
		snprintf(text, sizeof text, "prompt: a\ninit_image: in.png\nsteps: %d\n"
		    "strength: %s\n", cases[i].steps, cases[i].strength);
		n = calls_of(text, SD_SAMPLER_EULER, &st);
		tap_ok(n == cases[i].want && st == atof(cases[i].strength),
		    "strength %s x %d steps: %d UNet calls (diffusers %d)",
		    cases[i].strength, cases[i].steps, n, cases[i].want);
	}

	if (src == NULL || *src == '\0') {
		tap_skip("the strength sweep: SDBATCH_SRCDIR is not set");
		return;
	}
	snprintf(path, sizeof path, "%s/tests/strength-steps.txt", src);
	if ((f = fopen(path, "r")) == NULL) {
		tap_ok(0, "%s: cannot open", path);
		return;
	}
	while (fgets(line, sizeof line, f) != NULL) {
		char *p = line, *end;
		long steps;
		int k;

		if (line[0] == '#' || line[0] == '\n')
			continue;
		steps = strtol(p, &end, 10);
		p = end;
		for (k = 1; k <= 100; k++) {
			long want = strtol(p, &end, 10);
			int n, nd;
			if (end == p)
				break;
			p = end;
			/* the strength as a job file holds it: its decimal text */
			snprintf(text, sizeof text, "prompt: a\ninit_image: in.png\n"
			    "steps: %ld\nstrength: %d.%02d\n", steps, k / 100, k % 100);
			n = calls_of(text, SD_SAMPLER_EULER, &st);
			if (n != (want == 0 ? -1 : want)) {
				if (bad++ < 5)
					tap_diag("steps %ld strength %d.%02d: %d calls, "
					    "diffusers %ld", steps, k / 100, k % 100, n, want);
			}
			/* DDIM too (another scheduler class), on every 7th */
			if ((k + steps) % 7 == 0) {
				nd = calls_of(text, SD_SAMPLER_DDIM, &st);
				if (nd != (want == 0 ? -1 : want) && ddim_bad++ < 5)
					tap_diag("ddim steps %ld strength %d.%02d: %d "
					    "calls, diffusers %ld", steps, k / 100, k % 100,
					    nd, want);
			}
		}
		if (k == 101)
			rows++;
	}
	fclose(f);
	tap_ok(rows == 100, "the sweep table has 100 rows of 100 (%d)", rows);
	tap_ok(bad == 0 && ddim_bad == 0, "strength sweep, steps 1..100 x strength "
	    "0.01..1.00 from job text: the scheduler runs int(steps * strength) "
	    "calls as Python computes it (%d differ, %d with ddim)", bad, ddim_bad);
}

int
main(void)
{
	config_init(&cfg);
	table();
	round_trip();
	flags();
	config_defaults();
	model_defaults();
	flow_fields();
	strength();
	config_free(&cfg);
	return tap_done();
}
