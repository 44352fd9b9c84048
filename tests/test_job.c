/* test_job.c: job files, the configuration, output names, PNG metadata and
 * callback signing (no rendering, no binary). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spool/callback.h"
#include "spool/conf.h"
#include "spool/job.h"
#include "spool/metadata.h"
#include "spool/modelpath.h"
#include "spool/util.h"
#include "spool/yamltree.h"
#include "tap.h"

static struct sd_config cfg;

/* job_parse of a string literal. */
#define PARSE(j, c, text, ...) job_parse(j, c, text, strlen(text), __VA_ARGS__)

/* Parse text as job "t1"; expect failure with message holding want, the
 * given field ("" for none) and line (-1: any). */
static void
bad(const char *what, const char *text, size_t len, const char *want,
    const char *field, int line)
{
	struct sd_job j;
	struct sd_error err;
	int l = -1, r;

	sd_error_clear(&err);
	job_init(&j, &cfg);
	r = job_parse(&j, &cfg, text, len ? len : strlen(text), "t1.yaml", "/tmp",
	    "t1", &err, &l);
	if (!tap_ok(r < 0 && err.code == SD_EDATA && strstr(err.message, want) != NULL &&
	    (field == NULL || strcmp(err.field, field) == 0) &&
	    (line < 0 || l == line), "rejects %s", what))
		tap_diag("r=%d code=%d field=\"%s\" line=%d message: %s (want \"%s\" "
		    "field %s line %d)", r, err.code, err.field, l, err.message, want,
		    field ? field : "-", line);
	job_free(&j);
}

static char *
repeat(const char *head, const char *unit, size_t n, const char *tail)
{
	size_t hl = strlen(head), ul = strlen(unit), tl = strlen(tail), i;
	char *s = malloc(hl + ul * n + tl + 1), *p = s;

	memcpy(p, head, hl);
	p += hl;
	for (i = 0; i < n; i++, p += ul)
		memcpy(p, unit, ul);
	memcpy(p, tail, tl + 1);
	return s;
}

static void
hostile_jobs(void)
{
	char *s;

	bad("an empty file", "", 0, "empty document", NULL, 0);
	bad("a file of comments", "# nothing here\n", 0, "empty document", NULL, 0);
	bad("a null document", "---\n", 0, "not null", NULL, -1);
	bad("a scalar document", "hello\n", 0, "not a scalar", NULL, 1);
	bad("a list document", "- a\n- b\n", 0, "not a list", NULL, 1);
	bad("two documents", "prompt: a\n---\nprompt: b\n", 0,
	    "more than one YAML document", NULL, 2);
	bad("a duplicate key", "prompt: a\nwidth: 64\nprompt: b\n", 0,
	    "duplicate key (first given on line 1)", NULL, 3);
	bad("an anchor bomb", "a: &a [x, x, x, x]\nb: &b [*a, *a, *a, *a]\n"
	    "c: [*b, *b, *b, *b]\nprompt: boom\n", 0, "anchors", NULL, 1);
	bad("an alias", "prompt: *x\n", 0, "aliases", NULL, 1);
	bad("a tag", "prompt: !!python/object/apply:os.system [ls]\n", 0,
	    "tags", NULL, 1);
	bad("a custom tag", "prompt: !secret x\n", 0, "tags", NULL, 1);
	s = repeat("prompt: \"", "a", 20000, "\"\n");
	bad("a huge string", s, 0, "over the limit of 16384", NULL, 1);
	free(s);
	s = repeat("prompt: x\nmetadata:\n", "  - aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n", 2000, "");
	bad("a huge document", s, 0, "over the limit of 65536", NULL, 0);
	free(s);
	bad("invalid UTF-8", "prompt: a\nnegative_prompt: \xff\xfe\n", 0,
	    "invalid UTF-8", NULL, 2);
	bad("overlong UTF-8", "prompt: \xc0\xaf\n", 0, "invalid UTF-8", NULL, 1);
	bad("a UTF-8 surrogate", "prompt: \xed\xa0\x80\n", 0, "invalid UTF-8", NULL, 1);
	bad("UTF-16", "\xff\xfep\0r\0o\0m\0p\0t\0", 14, "invalid UTF-8", NULL, 1);
	bad("a NUL byte", "prompt: a\0b\n", 12, "YAML syntax error", NULL, 1);
	bad("an escaped NUL", "prompt: \"a\\0b\"\n", 0, "NUL character", NULL, 1);
	s = repeat("prompt: x\nmetadata: ", "[", 40, "]");
	bad("deep nesting", s, 0, "nested too deeply", NULL, 2);
	free(s);
	s = repeat("prompt: x\nmetadata: [", "1,", 5000, "1]\n");
	bad("too many nodes", s, 0, "too many YAML nodes", NULL, 2);
	free(s);
	bad("a complex key", "? [a, b]\n: c\nprompt: x\n", 0,
	    "a mapping key must be a string", NULL, 1);
	bad("bad indentation", "prompt: a\n  width: 64\n", 0, "YAML syntax error",
	    NULL, 2);
	bad("an unterminated quote", "prompt: \"abc\nwidth: 64\n", 0,
	    "YAML syntax error", NULL, -1);
	bad("a tab indent", "output:\n\tdir: x\nprompt: a\n", 0, "YAML syntax error",
	    NULL, 2);
	bad("an unknown field", "promt: a cat\n", 0,
	    "unknown field (did you mean \"prompt\"?)", "promt", 1);
	bad("an unknown field far from any", "colour: red\nprompt: a\n", 0,
	    "unknown field", "colour", 1);
	bad("a missing prompt", "width: 64\n", 0, "missing", "prompt", 0);
	bad("an empty prompt", "prompt: '  '\n", 0, "empty", "prompt", 1);
	bad("a null prompt", "prompt:\n", 0, "expected a string, got null", "prompt", 1);
	bad("a mapping prompt", "prompt: {a: b}\n", 0, "expected a string, got a mapping",
	    "prompt", 1);
	bad("a list prompt", "prompt: [a, b]\n", 0, "got a list", "prompt", 1);
	bad("a word for width", "prompt: a\nwidth: wide\n", 0, "expected an integer",
	    "width", 2);
	bad("a quoted width", "prompt: a\nwidth: \"512\"\n", 0,
	    "expected an integer, got the string \"512\"", "width", 2);
	bad("a width not a multiple of 8", "prompt: a\nwidth: 500\n", 0,
	    "500 is not a multiple of 8", "width", 2);
	bad("a width over the limit", "prompt: a\nwidth: 4096\n", 0,
	    "4096 is out of range (64..2048)", "width", 2);
	bad("a height under 64", "prompt: a\nheight: 8\n", 0, "out of range", "height", 2);
	bad("negative steps", "prompt: a\nsteps: -3\n", 0, "out of range (1..150)",
	    "steps", 2);
	bad("fractional steps", "prompt: a\nsteps: 2.5\n", 0, "expected an integer",
	    "steps", 2);
	bad("a huge seed", "prompt: a\nseed: 99999999999999999999999\n", 0,
	    "out of range", "seed", 2);
	bad("seed -2", "prompt: a\nseed: -2\n", 0, "out of range", "seed", 2);
	bad("seed near the top with count", "prompt: a\ncount: 3\nseed: 9223372036854775806\n",
	    0, "+ count is over", "seed", 3);
	bad("guidance nan", "prompt: a\nguidance_scale: .nan\n", 0,
	    "expected a number", "guidance_scale", 2);
	bad("guidance inf", "prompt: a\nguidance_scale: 1e999\n", 0,
	    "expected a number", "guidance_scale", 2);
	bad("negative guidance", "prompt: a\nguidance_scale: -1\n", 0, "out of range",
	    "guidance_scale", 2);
	bad("an unknown sampler", "prompt: a\nsampler: turbo9000\n", 0,
	    "unknown sampler \"turbo9000\"", "sampler", 2);
	bad("an unknown schedule", "prompt: a\nschedule: cosine\n", 0, "unknown value",
	    "schedule", 2);
	bad("an unknown rng", "prompt: a\nrng: gpu\n", 0, "unknown value", "rng", 2);
	bad("count 0", "prompt: a\ncount: 0\n", 0, "out of range (1..16)", "count", 2);
	bad("count over the limit", "prompt: a\ncount: 17\n", 0, "out of range", "count", 2);
	bad("clip_skip 0", "prompt: a\nclip_skip: 0\n", 0, "out of range", "clip_skip", 2);
	bad("strength without init_image", "prompt: a\nstrength: 0.5\n", 0,
	    "give an init_image", "strength", 2);
	bad("strength 0", "prompt: a\ninit_image: x.png\nstrength: 0\n", 0,
	    "must be above 0", "strength", 3);
	bad("strength 1.5", "prompt: a\ninit_image: x.png\nstrength: 1.5\n", 0,
	    "out of range", "strength", 3);
	bad("a mask without init_image", "prompt: a\nmask: m.png\n", 0,
	    "needs an init_image", "mask", 2);
	bad("a path with a control character", "prompt: a\nmodel: \"a\\tb\"\n", 0,
	    "control characters", "model", 2);
	bad("output.dir with ..", "prompt: a\noutput: {dir: ../../etc}\n", 0,
	    "\"..\" is not allowed", "output.dir", 2);
	bad("output.dir with inner ..", "prompt: a\noutput:\n  dir: a/../../b\n", 0,
	    "\"..\" is not allowed", "output.dir", 3);
	bad("output.name with a slash", "prompt: a\noutput: {name: ../x.png}\n", 0,
	    "may not hold '/'", "output.name", 2);
	bad("output.name ..", "prompt: a\noutput: {name: ..}\n", 0,
	    "not a file name", "output.name", 2);
	bad("an unknown placeholder", "prompt: a\noutput: {name: \"{date}.png\"}\n", 0,
	    "unknown placeholder \"{date}\"", "output.name", 2);
	bad("an unknown output key", "prompt: a\noutput: {folder: x}\n", 0,
	    "unknown field", "output.folder", 2);
	bad("output as a string", "prompt: a\noutput: out.png\n", 0,
	    "expected a mapping", "output", 2);
	bad("an ftp callback", "prompt: a\ncallback: {url: \"ftp://x/y\"}\n", 0,
	    "only http:// and https://", "callback.url", 2);
	bad("a file callback", "prompt: a\ncallback: {url: \"file:///etc/passwd\"}\n", 0,
	    "only http:// and https://", "callback.url", 2);
	bad("a callback without host", "prompt: a\ncallback: {url: \"http:///x\"}\n", 0,
	    "no host", "callback.url", 2);
	bad("a callback without url", "prompt: a\ncallback:\n  secret_env: S\n", 0,
	    "missing", "callback.url", 3);
	bad("a secret in secret_env", "prompt: a\ncallback:\n  url: http://h/\n"
	    "  secret_env: \"whsec_abc=\"\n", 0, "not an environment variable name",
	    "callback.secret_env", 4);
	bad("include_images: yes", "prompt: a\ncallback: {url: \"http://h/\", "
	    "include_images: yes}\n", 0, "expected true or false",
	    "callback.include_images", 2);
	bad("a misspelt callback key", "prompt: a\ncallback: {url: \"http://h/\", "
	    "secret: x}\n", 0, "unknown field", "callback.secret", 2);
	s = repeat("prompt: \"", "\xc3\xa9", 4001, "\"\n");
	bad("a prompt over the length limit", s, 0, "4001 characters, over the limit of 4000",
	    "prompt", 1);
	free(s);
}

static void
good_job(void)
{
	static const char text[] =
	    "\xef\xbb\xbf# a full job\n"
	    "prompt: \"a rusty robot, oil painting\"\n"
	    "negative_prompt: blurry\n"
	    "model: m.safetensors\n"
	    "width: 768\n"
	    "height: 512.0\n"
	    "steps: 30\n"
	    "guidance_scale: 5\n"
	    "sampler: dpmpp_2m\n"
	    "schedule: karras\n"
	    "seed: 42\n"
	    "count: 3\n"
	    "rng: cuda\n"
	    "clip_skip: 2\n"
	    "init_image: in.png\n"
	    "strength: 0.6\n"
	    "output: { dir: robots, name: \"{id}-{index}-{seed}.png\" }\n"
	    "callback: { url: \"https://example.com/hook\", secret_env: HOOK_SECRET, include_images: true }\n"
	    "metadata: { user: bob, n: 3, ok: true, x: 1.5, none: ~, s: \"42\", l: [1, two] }\n";
	struct sd_job j;
	struct sd_error err;
	char *m;
	int line;

	sd_error_clear(&err);
	job_init(&j, &cfg);
	if (!tap_ok(job_parse(&j, &cfg, text, sizeof text - 1, "full.yaml", "/jobs",
	    "full", &err, &line) == 0, "a full job parses"))
		tap_diag("%s", err.message);
	tap_ok(strcmp(j.prompt, "a rusty robot, oil painting") == 0 &&
	    strcmp(j.negative_prompt, "blurry") == 0, "prompt and negative prompt");
	tap_ok(j.width == 768 && j.height == 512 && j.steps == 30 &&
	    j.guidance_scale == 5 && j.count == 3 && j.clip_skip == 2 &&
	    j.strength > 0.59 && j.strength < 0.61, "numbers");
	tap_ok(j.sampler == SD_SAMPLER_DPMPP_2M && j.schedule == SD_SCHEDULE_KARRAS &&
	    j.rng == SD_RNG_CUDA, "names");
	tap_ok(!j.seed_random && j.seed == 42, "seed");
	tap_ok(strcmp(j.output_dir, "robots") == 0 &&
	    strcmp(j.output_name, "{id}-{index}-{seed}.png") == 0, "output");
	tap_ok(j.callback.url && strcmp(j.callback.url, "https://example.com/hook") == 0 &&
	    strcmp(j.callback.secret_env, "HOOK_SECRET") == 0 &&
	    j.callback.include_images == 1, "callback");
	m = json_dumps(j.metadata, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (!tap_ok(m && strcmp(m, "{\"user\":\"bob\",\"n\":3,\"ok\":true,\"x\":1.5,"
	    "\"none\":null,\"s\":\"42\",\"l\":[1,\"two\"]}") == 0,
	    "metadata keeps YAML types"))
		tap_diag("%s", m);
	free(m);
	tap_ok(j.line[JF_PROMPT] == 2 && j.line[JF_METADATA] == 19 && j.line[JF_SEED] == 11,
	    "field lines (after a BOM)");
	job_free(&j);

	job_init(&j, &cfg);
	tap_ok(PARSE(&j, &cfg, "prompt: hi\nsampler: DPM++ 2M SDE Karras\n", "k.yaml", ".",
	    "k", &err, NULL) == 0 && j.sampler == SD_SAMPLER_DPMPP_2M_SDE &&
	    j.schedule == SD_SCHEDULE_KARRAS, "A1111's \"DPM++ 2M SDE Karras\": sampler "
	    "and schedule");
	job_free(&j);
	job_init(&j, &cfg);
	tap_ok(PARSE(&j, &cfg, "prompt: hi\nsampler: Euler a\n", "e.yaml", ".",
	    "e", &err, NULL) == 0 && j.sampler == SD_SAMPLER_EULER_A &&
	    j.schedule == SD_SCHEDULE_NORMAL, "\"Euler a\"");
	job_free(&j);

	job_init(&j, &cfg);
	tap_ok(PARSE(&j, &cfg, "prompt: hi\nseed: -1\n", "r.yaml", ".", "r",
	    &err, NULL) == 0 && j.seed_random && j.width == 0 && j.height == 0 &&
	    j.steps == 0 && j.guidance_scale < 0 && j.sampler == SD_SAMPLER_AUTO &&
	    j.prediction == SD_PREDICTION_AUTO && j.spacing == SD_SPACING_AUTO &&
	    j.count == 1 && j.clip_skip == 1 && j.strength == 0.75 &&
	    j.schedule == SD_SCHEDULE_NORMAL && j.rng == SD_RNG_CPU,
	    "defaults: the model's size, steps, guidance, sampler, prediction and "
	    "spacing; seed -1 is random");
	job_free(&j);

	job_init(&j, &cfg);
	tap_ok(PARSE(&j, &cfg, "prompt: hi\n", "bad id.yaml", ".", "bad id",
	    &err, NULL) < 0 && strstr(err.message, "not a valid job id") &&
	    strcmp(err.field, "id") == 0, "an invalid job id is rejected");
	job_free(&j);
	tap_ok(util_valid_id("a") && util_valid_id("Job-1.2_x") &&
	    !util_valid_id(".hidden") && !util_valid_id("-x") && !util_valid_id("") &&
	    !util_valid_id("a/b") && !util_valid_id("caf\xc3\xa9"), "job id syntax");
	{
		char id[200];
		memset(id, 'a', 129);
		id[128] = '\0';
		tap_ok(util_valid_id(id), "a 128-character id is valid");
		id[128] = 'a';
		id[129] = '\0';
		tap_ok(!util_valid_id(id), "a 129-character id is not");
	}
}

/* Files that a job names. */
static void
resolve(void)
{
	char dir[] = "/tmp/sdbatch-test-job-XXXXXX", path[1200];
	struct sd_config c2;
	struct sd_job j;
	struct sd_error err;
	int line;
	FILE *f;

	if (mkdtemp(dir) == NULL) {
		tap_skip("no temporary folder");
		return;
	}
	snprintf(path, sizeof path, "%s/m.safetensors", dir);
	f = fopen(path, "w");
	fputs("x", f);
	fclose(f);
	snprintf(path, sizeof path, "%s/in.png", dir);
	f = fopen(path, "w");
	fputs("x", f);
	fclose(f);

	job_init(&j, &cfg);
	PARSE(&j, &cfg, "prompt: a\nmodel: m.safetensors\ninit_image: in.png\n",
	    "j.yaml", dir, "j", &err, NULL);
	tap_ok(job_resolve(&j, &cfg, &err, &line) == 0 && j.model[0] == '/' &&
	    strstr(j.init_image, "/in.png") != NULL, "relative paths resolve against "
	    "the job's folder");
	job_free(&j);

	job_init(&j, &cfg);
	sd_error_clear(&err);
	PARSE(&j, &cfg, "prompt: a\n\nmodel: nothere.safetensors\n", "j.yaml",
	    dir, "j", &err, NULL);
	tap_ok(job_resolve(&j, &cfg, &err, &line) < 0 && err.code == SD_ENOINPUT &&
	    line == 3 && strcmp(err.field, "model") == 0 &&
	    strstr(err.message, "j.yaml:3: model: \"nothere.safetensors\" not found") &&
	    strstr(err.message, "looked at"), "a missing model names the field, line "
	    "and places looked at");
	tap_diag("%s", err.message);
	job_free(&j);

	job_init(&j, &cfg);
	sd_error_clear(&err);
	PARSE(&j, &cfg, "prompt: a\nmodel: m.safetensors\ninit_image: gone.png\n",
	    "j.yaml", dir, "j", &err, NULL);
	tap_ok(job_resolve(&j, &cfg, &err, &line) < 0 && err.code == SD_ENOINPUT &&
	    line == 3 && strcmp(err.field, "init_image") == 0 &&
	    strstr(err.message, "no such file"), "a missing init image names the field");
	job_free(&j);

	job_init(&j, &cfg);
	sd_error_clear(&err);
	PARSE(&j, &cfg, "prompt: a\n", "j.yaml", dir, "j", &err, NULL);
	tap_ok(job_resolve(&j, &cfg, &err, &line) < 0 && err.code == SD_ENOINPUT &&
	    strstr(err.message, "no model given"), "no model anywhere is an error");
	job_free(&j);

	/* Allowed model folders. */
	config_init(&c2);
	c2.model_dirs = calloc(1, sizeof *c2.model_dirs);
	c2.model_dirs[0] = strdup("/usr/share");
	c2.n_model_dirs = 1;
	job_init(&j, &c2);
	sd_error_clear(&err);
	PARSE(&j, &c2, "prompt: a\nmodel: m.safetensors\n", "j.yaml", dir, "j",
	    &err, NULL);
	tap_ok(job_resolve(&j, &c2, &err, &line) < 0 && err.code == SD_EDATA &&
	    strstr(err.message, "outside the allowed model folders") &&
	    strcmp(err.field, "model") == 0, "a model outside model_dirs is refused");
	job_free(&j);
	config_free(&c2);

	/* The Hub cache. */
	{
		char hub[700], snap[900];
		snprintf(hub, sizeof hub, "%s/hub/models--org--name", dir);
		/* as huggingface_hub writes it: a 40-hex commit, files */
		snprintf(snap, sizeof snap, "%s/snapshots/abc1230000000000000000000000000000000000", hub);
		util_mkdirs(snap, NULL);
		snprintf(path, sizeof path, "%s/model_index.json", snap);
		f = fopen(path, "w");
		fputs("{}\n", f);
		fclose(f);
		snprintf(path, sizeof path, "%s/refs", hub);
		util_mkdirs(path, NULL);
		snprintf(path, sizeof path, "%s/refs/main", hub);
		f = fopen(path, "w");
		fputs("abc1230000000000000000000000000000000000", f);
		fclose(f);
		snprintf(path, sizeof path, "%s/hub", dir);
		setenv("HF_HUB_CACHE", path, 1);
		char *out = NULL;
		tap_ok(model_resolve("org/name", "/nonexistent", &cfg, "model", &out,
		    &err) == 0 && out && strstr(out, "snapshots/abc1230000000000000000000000000000000000"),
		    "a Hub id is found in the Hub cache");
		free(out);
		tap_ok(model_resolve("org/other", "/nonexistent", &cfg, "model", &out,
		    &err) < 0 && strstr(err.message, "models--org--other"),
		    "a Hub id not in the cache says where it looked");
		unsetenv("HF_HUB_CACHE");
	}
	snprintf(path, sizeof path, "rm -rf '%s'", dir);
	if (system(path) != 0)
		tap_diag("cannot remove %s", dir);
}

static void
config(void)
{
	struct sd_config c;
	struct sd_error err;
	static const char good[] =
	    "model: models/sd15.safetensors\n"
	    "threads: 4\n"
	    "output_root: /srv/out\n"
	    "model_dirs: [/models, rel]\n"
	    "poll_interval: 0.5\n"
	    "stale_after: 60\n"
	    "heartbeat_interval: 5\n"
	    "defaults: { width: 256, height: 384, steps: 8, sampler: ddim, count: 2 }\n"
	    "limits: { width: 1024, count: 4, prompt_length: 100, job_size: 4096 }\n"
	    "callback: { attempts: 3, timeout: 2, total_time: 30, backoff: 0.5 }\n";

	config_init(&c);
	sd_error_clear(&err);
	if (!tap_ok(config_parse(&c, good, sizeof good - 1, "/etc/sdbatch/sdbatch.yaml",
	    &err) == 0, "a configuration parses"))
		tap_diag("%s", err.message);
	tap_ok(strcmp(c.model, "/etc/sdbatch/models/sd15.safetensors") == 0 &&
	    c.n_model_dirs == 2 && strcmp(c.model_dirs[1], "/etc/sdbatch/rel") == 0,
	    "relative paths are the configuration file's");
	tap_ok(c.threads == 4 && c.poll_s == 0.5 && c.stale_s == 60 &&
	    c.heartbeat_s == 5 && c.defaults.width == 256 && c.defaults.steps == 8 &&
	    c.defaults.sampler == SD_SAMPLER_DDIM && c.limits.width == 1024 &&
	    c.limits.height == 2048 && c.limits.yaml.max_document == 4096 &&
	    c.callback.attempts == 3 && c.callback.backoff_s == 0.5, "values");
	config_free(&c);

#define BADCONF(what, text, want) do { \
	config_init(&c); \
	sd_error_clear(&err); \
	int r_ = config_parse(&c, text, strlen(text), "c.yaml", &err); \
	if (!tap_ok(r_ < 0 && err.code == SD_ECONFIG && strstr(err.message, want), \
	    "configuration: %s", what)) \
		tap_diag("%s", err.message); \
	config_free(&c); \
} while (0)
	BADCONF("unknown key", "modle: x\n", "c.yaml:1: modle: unknown key");
	BADCONF("bad type", "threads: many\n", "expected an integer");
	BADCONF("bad default", "defaults: {sampler: fast}\n", "unknown sampler");
	BADCONF("bad limit", "limits: {widht: 5}\n", "limits.widht: unknown key");
	BADCONF("heartbeat vs stale", "stale_after: 10\nheartbeat_interval: 6\n",
	    "at most half");
	BADCONF("not a mapping", "- a\n", "must be a mapping");
	BADCONF("bad YAML", "a: [\n", "YAML syntax error");
	BADCONF("unknown device", "device: tpu\n", "unknown device");
	BADCONF("device cudax", "device: cudax\n", "c.yaml:1: device: unknown device");
	BADCONF("device cuda:", "device: \"cuda:\"\n", "unknown device");
	BADCONF("device cuda:x", "device: \"cuda:x\"\n", "unknown device");
	BADCONF("device cuda:256", "device: \"cuda:256\"\n", "unknown device");
	BADCONF("device cuda:-1", "device: \"cuda:-1\"\n", "unknown device");
	{
		static const char *const good_devices[] = {
			"cpu", "cuda", "cuda:0", "cuda:7", "cuda:12", "cuda:255",
		};
		static const char *const bad_devices[] = {
			"", "CPU", "cuda0", "cuda:", "cuda:01", "cuda:1x", "cuda: 1",
			"cuda:256", "cuda:1000", "cudax", "cpu ",
		};
		int ok = 1;
		size_t i;

		for (i = 0; i < sizeof good_devices / sizeof *good_devices; i++)
			if (!config_device_valid(good_devices[i])) {
				tap_diag("\"%s\" rejected", good_devices[i]);
				ok = 0;
			}
		for (i = 0; i < sizeof bad_devices / sizeof *bad_devices; i++)
			if (config_device_valid(bad_devices[i])) {
				tap_diag("\"%s\" accepted", bad_devices[i]);
				ok = 0;
			}
		tap_ok(ok, "config_device_valid: cpu, cuda, cuda:N (0-255) only");
		config_init(&c);
		tap_ok(config_parse(&c, "device: \"cuda:3\"\n", 17, "c.yaml", &err) == 0 &&
		    strcmp(c.device, "cuda:3") == 0, "device: cuda:3 is accepted");
		config_free(&c);
	}
	config_init(&c);
	tap_ok(config_load(&c, "/nonexistent/sdbatch.yaml", &err) < 0 &&
	    err.code == SD_ECONFIG, "a missing configuration file is a configuration error");
	config_free(&c);
}

static void
names(void)
{
	struct sd_error err;
	char *n;

#define NAME(pat, idx, seed, count, want) do { \
	n = job_output_name(pat, "job7", idx, seed, count, &err); \
	if (!tap_ok(n && strcmp(n, want) == 0, "name %s #%d of %d -> %s", pat, idx, \
	    count, want)) \
		tap_diag("got %s", n ? n : err.message); \
	free(n); \
} while (0)
	NAME("{id}.png", 0, 42, 1, "job7.png");
	NAME("{id}.png", 2, 42, 3, "job7-2.png");
	NAME("{id}-{index}.png", 1, 42, 3, "job7-1.png");
	NAME("{seed}.png", 0, 42, 1, "42.png");
	NAME("{id}-{seed}", 1, 43, 2, "job7-43-1.png");
	NAME("robot", 0, 1, 1, "robot.png");
	NAME("x.PNG", 0, 1, 1, "x.PNG");
	n = job_output_name("../{id}.png", "j", 0, 0, 1, &err);
	tap_ok(n == NULL && strstr(err.message, "'/'"), "a name pattern may not leave "
	    "its folder");
	free(n);
}

static void
signing(void)
{
	unsigned char *key;
	size_t keylen = 0, n;
	char *sig, *b;
	unsigned char *d;
	struct callback_config cc;
	int i, ok = 1;

	key = callback_secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &keylen);
	sig = key ? callback_signature(key, keylen, "msg_p5jXN8AQM9LWM0D4loKWxJek",
	    1614265330, "{\"test\": 2432232314}", 20) : NULL;
	if (!tap_ok(sig && strcmp(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
	    == 0, "the Standard Webhooks test vector"))
		tap_diag("got %s", sig ? sig : "(null)");
	free(sig);
	free(key);
	key = callback_secret_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &keylen);
	tap_ok(key != NULL && keylen == 24, "whsec_ is optional");
	free(key);
	tap_ok(callback_secret_key("whsec_!!notbase64", &keylen) == NULL &&
	    callback_secret_key("whsec_", &keylen) == NULL, "a bad secret is refused");
	for (i = 0; i < 40 && ok; i++) {
		unsigned char buf[40];
		util_random(buf, (size_t)i);
		b = util_base64_encode(buf, (size_t)i);
		d = util_base64_decode(b, &n);
		ok = d && n == (size_t)i && memcmp(d, buf, n) == 0;
		free(b);
		free(d);
	}
	tap_ok(ok, "base64 round trips");
	b = util_base64_encode("foobar", 6);
	tap_ok(strcmp(b, "Zm9vYmFy") == 0, "base64 of foobar");
	free(b);
	tap_ok(callback_retry_after("120", 0) == 120 && callback_retry_after(" 3 ", 0) == 3,
	    "Retry-After in seconds");
	tap_ok(callback_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784111770.0) == 7,
	    "Retry-After as an HTTP date");
	tap_ok(callback_retry_after("soon", 0) < 0 && callback_retry_after("-5", 0) < 0,
	    "a bad Retry-After is ignored");
	cc.backoff_s = 1;
	cc.backoff_max_s = 5;
	for (i = 0, ok = 1; i < 200 && ok; i++) {
		double d1 = callback_backoff(&cc, 1), d3 = callback_backoff(&cc, 3),
		    d9 = callback_backoff(&cc, 9);
		ok = d1 >= 0.5 && d1 < 1.5 && d3 >= 2 && d3 < 6 && d9 >= 2.5 && d9 < 7.5;
	}
	tap_ok(ok, "backoff doubles, is capped, and has jitter in [0.5, 1.5)");
}

static void
metadata(void)
{
	struct sd_job j;
	struct sd_error err;
	char name[64], *p, *json;
	json_t *o;

	job_init(&j, &cfg);
	PARSE(&j, &cfg, "prompt: a cat\nnegative_prompt: blurry\nsteps: 20\n"
	    "sampler: euler_a\nschedule: karras\nseed: 42\nguidance_scale: 7.5\n"
	    "width: 512\nheight: 512\n",
	    "m.yaml", ".", "m", &err, NULL);
	metadata_model_name("/models/v1-5-pruned-emaonly.safetensors", name, sizeof name);
	tap_ok(strcmp(name, "v1-5-pruned-emaonly") == 0, "model name from the path");
	metadata_model_name("/models/sd-v1.5/", name, sizeof name);
	tap_ok(strcmp(name, "sd-v1.5") == 0, "model name of a diffusers folder");
	metadata_model_name("/root/.cache/huggingface/hub/models--stable-diffusion-v1-5--stable-diffusion-v1-5/"
	    "snapshots/451f4fe16113bff5a5d2269ed5ad43b0592e9a14", name, sizeof name);
	tap_ok(strcmp(name, "stable-diffusion-v1-5/stable-diffusion-v1-5") == 0,
	    "model name of a Hub cache snapshot: the repository (%s)", name);
	p = metadata_parameters(&j, 43, "v1-5-pruned-emaonly");
	if (!tap_ok(p && strcmp(p, "a cat\nNegative prompt: blurry\nSteps: 20, Sampler: "
	    "Euler a, Schedule type: Karras, CFG scale: 7.5, Seed: 43, Size: 512x512, "
	    "Model: v1-5-pruned-emaonly, RNG: CPU, Version: sdbatch " PACKAGE_VERSION) == 0,
	    "the A1111 parameters text"))
		tap_diag("%s", p);
	free(p);
	free(j.negative_prompt);
	j.negative_prompt = strdup("");
	j.guidance_scale = 7;
	j.schedule = SD_SCHEDULE_NORMAL;
	j.clip_skip = 2;
	p = metadata_parameters(&j, 1, "a,b");
	if (!tap_ok(p && strcmp(p, "a cat\nSteps: 20, Sampler: Euler a, Schedule type: "
	    "Normal, CFG scale: 7.0, Seed: 1, Size: 512x512, Model: \"a,b\", Clip skip: 2, "
	    "RNG: CPU, Version: sdbatch " PACKAGE_VERSION) == 0,
	    "no negative prompt line, clip skip, quoting"))
		tap_diag("%s", p);
	free(p);
	json = metadata_sdbatch_json(&j, 1, 43, "sd15");
	o = json ? json_loads(json, 0, NULL) : NULL;
	tap_ok(o && json_integer_value(json_object_get(o, "image_seed")) == 43 &&
	    json_integer_value(json_object_get(o, "index")) == 1 &&
	    strcmp(json_string_value(json_object_get(o, "prompt")), "a cat") == 0,
	    "the sdbatch chunk is JSON with the effective parameters");
	json_decref(o);
	free(json);
	job_free(&j);
}

static void
yaml_offsets(void)
{
	static const char text[] = "# \xc3\xa9t\xc3\xa9\nmodel: caf\xc3\xa9.safetensors  # c\n"
	    "prompt: 'x'\n";
	struct ynode *r = ytree_parse(text, sizeof text - 1, "o", NULL, NULL, NULL);
	struct ynode *m = ytree_get(r, "model");

	tap_ok(m && m->end - m->start == strlen("caf\xc3\xa9.safetensors") &&
	    memcmp(text + m->start, "caf\xc3\xa9", 5) == 0,
	    "node byte offsets hold after multi-byte characters");
	ytree_free(r);
	{
		static const char bom[] = "\xef\xbb\xbfmodel: m.safetensors\n";
		r = ytree_parse(bom, sizeof bom - 1, "o", NULL, NULL, NULL);
		m = ytree_get(r, "model");
		tap_ok(m && m->start == 10 && m->end == 23 && m->line == 1,
		    "a byte-order mark is skipped, offsets count it");
		ytree_free(r);
	}
}

/* The job files and the configuration of examples/ are valid. */
static void
examples(void)
{
	static const char *const jobs[] = { "txt2img", "full", "img2img",
	    "inpaint", "callback" };
	const char *src = getenv("SDBATCH_SRCDIR");
	struct sd_config c;
	struct sd_error err;
	char path[4096];
	size_t i;

	if (src == NULL || *src == '\0') {
		tap_skip("examples: SDBATCH_SRCDIR is not set");
		return;
	}
	for (i = 0; i < sizeof jobs / sizeof jobs[0]; i++) {
		struct sd_job j;
		snprintf(path, sizeof path, "%s/examples/%s.yaml", src, jobs[i]);
		job_init(&j, &cfg);
		sd_error_clear(&err);
		if (!tap_ok(job_load(&j, &cfg, path, jobs[i], &err, NULL) == 0,
		    "examples/%s.yaml is a valid job", jobs[i]))
			tap_diag("%s", err.message);
		job_free(&j);
	}
	snprintf(path, sizeof path, "%s/examples/sdbatch.yaml", src);
	config_init(&c);
	if (!tap_ok(config_load(&c, path, &err) == 0, "examples/sdbatch.yaml is a "
	    "valid configuration"))
		tap_diag("%s", err.message);
	config_free(&c);
}

int
main(void)
{
	config_init(&cfg);
	hostile_jobs();
	good_job();
	resolve();
	config();
	names();
	signing();
	metadata();
	yaml_offsets();
	examples();
	config_free(&cfg);
	return tap_done();
}
