/* cmd_run.c: `sdbatch run`: one job now, in the foreground. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "model/hub.h"
#include "spool/callback.h"
#include "spool/job.h"
#include "spool/result.h"
#include "spool/runjob.h"
#include "spool/util.h"

static void
run_usage(FILE *out)
{
	fputs("Usage: sdbatch run [OPTIONS] [JOB.yaml | -]\n"
	    "       sdbatch run [OPTIONS] --prompt TEXT [JOB OPTIONS]\n"
	    "\n"
	    "Run one job now and print the paths of the PNGs it writes, one a line.\n"
	    "The job comes from a YAML job file (see sdbatch-job(5)), from standard\n"
	    "input (-), or from the options below; options given with a job file\n"
	    "replace its fields.\n"
	    "\n"
	    "Job options:\n"
	    "  -p, --prompt TEXT       what to render\n"
	    "  -n, --negative TEXT     negative prompt\n"
	    "      --model PATH        checkpoint file, diffusers folder or Hub id\n"
	    "      --unet PATH         the UNet from this file instead\n"
	    "      --vae PATH          the VAE from this file instead\n"
	    "  -W, --width N           image width, a multiple of 8 (default 512)\n"
	    "  -H, --height N          image height, a multiple of 8 (default 512)\n"
	    "  -s, --steps N           sampling steps (default 20)\n"
	    "  -g, --guidance X        guidance scale (default 7.5)\n"
	    "      --sampler NAME      euler_a, euler, ddim, dpmpp_2m, lms, pndm, heun,\n"
	    "                          dpm2, dpm2_a, unipc, dpmpp_2m_sde, deis, lcm, or\n"
	    "                          A1111's name (\"DPM++ 2M SDE Karras\"); see\n"
	    "                          --list-samplers\n"
	    "      --schedule NAME     normal or karras\n"
	    "      --seed N            seed of the first image (-1: random)\n"
	    "  -c, --count N           images; image i uses seed + i\n"
	    "      --rng cpu|cuda      whose random numbers (torch CPU or CUDA)\n"
	    "      --clip-skip N       1 = last CLIP layer, 2 = penultimate\n"
	    "      --init-image IMAGE  img2img: start from this image (PNG or JPEG)\n"
	    "      --strength X        img2img/inpainting strength, 0 < X <= 1\n"
	    "      --mask IMAGE        inpainting mask (PNG or JPEG), white = repaint\n"
	    "  -o, --output PATH       where to write: {id}, {index} and {seed} in the\n"
	    "                          file name are replaced; with several images and\n"
	    "                          no {index}, -N is added before the extension;\n"
	    "                          a PATH ending in / is a folder\n"
	    "      --list-samplers     print the samplers and their other names, and exit\n"
	    "\n" CLI_COMMON_HELP
	    "\n"
	    "Exit status: 0 ok, 64 usage, 65 bad job data, 66 missing input,\n"
	    "69 unavailable, 70 internal error, 74 I/O error, 75 interrupted,\n"
	    "78 bad configuration.\n", out);
}

enum {
	OPT_NEGATIVE = OPT_COMMON_END, OPT_UNET, OPT_VAE, OPT_SAMPLER,
	OPT_SCHEDULE, OPT_SEED, OPT_RNG, OPT_CLIP_SKIP, OPT_INIT_IMAGE,
	OPT_STRENGTH, OPT_MASK, OPT_LIST_SAMPLERS
};

/* --list-samplers: one line a sampler. */
static void
list_samplers(FILE *out)
{
	fprintf(out, "%-13s %-13s %-6s %-10s %-46s %s\n", "NAME", "A1111", "KARRAS",
	    "UNET CALLS", "DIFFUSERS", "ALSO ACCEPTED");
	for (int i = 0; i < SD_SAMPLER_COUNT; i++) {
		enum sd_sampler s = (enum sd_sampler)i;
		char calls[32];

		snprintf(calls, sizeof calls, "%s", sd_sampler_model_calls(s, 10) >= 19 ?
		    "2/step" : "1/step");
		fprintf(out, "%-13s %-13s %-6s %-10s %-46s %s\n", sd_sampler_name(s),
		    sd_sampler_a1111_name(s), sd_sampler_karras_ok(s) ? "yes" : "no", calls,
		    sd_sampler_diffusers_class(s), sd_sampler_aliases(s));
	}
	fputs("\nNames are case-insensitive; spaces, '-' and '_' are alike; a \"Karras\"\n"
	    "suffix (\"DPM++ 2M Karras\", dpmpp_2m_karras) sets the karras schedule.\n", out);
}

/* The job given by options (NULL / unset when not given). */
struct job_flags {
	const char *prompt, *negative, *model, *unet, *vae, *init_image, *mask;
	const char *output;
	long long width, height, steps, count, clip_skip, seed;
	int has_width, has_height, has_steps, has_count, has_clip_skip, has_seed;
	double guidance, strength;
	int has_guidance, has_strength;
	int has_sampler, has_schedule, has_rng;
	enum sd_sampler sampler;
	enum sd_schedule schedule;
	enum sd_rng_kind rng;
};

static int
set_str(char **field, const char *value)
{
	return config_set_string(field, value);
}

/* A path from the command line: relative to the current folder. */
static int
set_path(char **field, const char *value)
{
	char *cwd, *p;

	if (value[0] == '/')
		return config_set_string(field, value);
	if ((cwd = getcwd(NULL, 0)) == NULL)
		return -1;
	p = util_join(cwd, value);
	free(cwd);
	if (p == NULL)
		return -1;
	free(*field);
	*field = p;
	return 0;
}

static int
apply_flags(struct sd_job *j, const struct job_flags *f)
{
	int r = 0;

	if (f->prompt)
		r |= set_str(&j->prompt, f->prompt);
	if (f->negative)
		r |= set_str(&j->negative_prompt, f->negative);
	if (f->model)
		r |= set_str(&j->model, f->model);
	if (f->unet)
		r |= set_str(&j->unet, f->unet);
	if (f->vae)
		r |= set_str(&j->vae, f->vae);
	if (f->init_image)
		r |= set_path(&j->init_image, f->init_image);
	if (f->mask)
		r |= set_path(&j->mask, f->mask);
	if (f->has_width)
		j->width = (int)f->width;
	if (f->has_height)
		j->height = (int)f->height;
	if (f->has_steps)
		j->steps = (int)f->steps;
	if (f->has_count)
		j->count = (int)f->count;
	if (f->has_clip_skip)
		j->clip_skip = (int)f->clip_skip;
	if (f->has_seed) {
		j->seed_random = f->seed < 0;
		j->seed = f->seed < 0 ? 0 : (uint64_t)f->seed;
	}
	if (f->has_guidance)
		j->guidance_scale = f->guidance;
	if (f->has_strength)
		j->strength = f->strength;
	if (f->has_sampler)
		j->sampler = f->sampler;
	if (f->has_schedule)
		j->schedule = f->schedule;
	if (f->has_rng)
		j->rng = f->rng;
	/* A flag's relative path is relative to the current folder, not to
	 * the job file's. */
	j->line[JF_MODEL] = f->model ? 0 : j->line[JF_MODEL];
	j->line[JF_UNET] = f->unet ? 0 : j->line[JF_UNET];
	j->line[JF_VAE] = f->vae ? 0 : j->line[JF_VAE];
	return r;
}

/* What run shows on stderr besides errors. */
struct run_display {
	struct progress_bar bar;
	int quiet;
};

/* A line on stderr (a model downloading), below the progress bar. */
static void
print_notice(void *user, const char *message)
{
	struct run_display *d = user;

	progress_bar_clear(&d->bar);
	fprintf(stderr, "sdbatch run: %s\n", message);
	fflush(stderr);
}

/* A model file downloading on first use, with the progress bar: its byte
 * count as it arrives, then a line once it is in place. */
static void
show_download(void *user, const char *job, const struct hub_progress *p)
{
	struct run_display *d = user;
	char label[1400], count[32] = "", size[32];

	if (p->count > 0)
		snprintf(count, sizeof count, " [%d/%d]", p->index, p->count);
	if (p->state == HUB_FILE_PROGRESS) {
		snprintf(label, sizeof label, "%s: downloading%s %s/%s", job, count,
		    p->repo, p->file);
		progress_bar_bytes(&d->bar, label, p->done, p->total);
		return;
	}
	progress_bar_clear(&d->bar);
	if (p->state == HUB_FILE_DONE && !d->quiet) {
		progress_bar_size(p->total, size, sizeof size);
		fprintf(stderr, "sdbatch run: %s: downloaded%s %s/%s (%s)\n", job,
		    count, p->repo, p->file, size);
		fflush(stderr);
	}
}

static void
print_path(void *user, const char *path)
{
	(void)user;
	printf("%s\n", path);
	fflush(stdout);
}

/* Read a whole stream (standard input), at most max bytes. */
static char *
read_stream(FILE *in, size_t max, size_t *len)
{
	size_t n = 0, cap = 4096;
	char *buf = malloc(cap + 1);

	while (buf != NULL) {
		size_t r;
		if (n == cap) {
			char *nb;
			if (cap > max)
				break;
			cap *= 2;
			if ((nb = realloc(buf, cap + 1)) == NULL) {
				free(buf);
				return NULL;
			}
			buf = nb;
		}
		r = fread(buf + n, 1, cap - n, in);
		n += r;
		if (r == 0)
			break;
	}
	if (buf != NULL)
		buf[n] = '\0';
	*len = n;
	return buf;
}

static void
id_from_path(const char *path, char *id, size_t size)
{
	const char *base = strrchr(path, '/');
	size_t n;

	base = base ? base + 1 : path;
	snprintf(id, size, "%s", base);
	n = strlen(id);
	if (n > 5 && strcmp(id + n - 5, ".yaml") == 0)
		id[n - 5] = '\0';
	else if (n > 4 && strcmp(id + n - 4, ".yml") == 0)
		id[n - 4] = '\0';
	if (!util_valid_id(id))
		snprintf(id, size, "job");
}

int
cmd_run(int argc, char **argv)
{
	static const struct option longopts[] = {
		CLI_COMMON_OPTIONS,
		{"prompt", required_argument, NULL, 'p'},
		{"negative", required_argument, NULL, 'n'},
		{"negative-prompt", required_argument, NULL, 'n'},
		{"unet", required_argument, NULL, OPT_UNET},
		{"vae", required_argument, NULL, OPT_VAE},
		{"width", required_argument, NULL, 'W'},
		{"height", required_argument, NULL, 'H'},
		{"steps", required_argument, NULL, 's'},
		{"guidance", required_argument, NULL, 'g'},
		{"guidance-scale", required_argument, NULL, 'g'},
		{"sampler", required_argument, NULL, OPT_SAMPLER},
		{"schedule", required_argument, NULL, OPT_SCHEDULE},
		{"seed", required_argument, NULL, OPT_SEED},
		{"count", required_argument, NULL, 'c'},
		{"rng", required_argument, NULL, OPT_RNG},
		{"clip-skip", required_argument, NULL, OPT_CLIP_SKIP},
		{"init-image", required_argument, NULL, OPT_INIT_IMAGE},
		{"strength", required_argument, NULL, OPT_STRENGTH},
		{"mask", required_argument, NULL, OPT_MASK},
		{"output", required_argument, NULL, 'o'},
		{"list-samplers", no_argument, NULL, OPT_LIST_SAMPLERS},
		{NULL, 0, NULL, 0},
	};
	struct cli_common cc;
	struct job_flags f;
	struct sd_job job;
	struct sd_error err;
	struct runjob_env env;
	struct runjob_result res;
	struct progress_sink sink;
	struct run_display disp;
	struct model_cache cache;
	struct progress_event ev;
	const char *file = NULL;
	char id[JOB_ID_MAX + 1], *buf = NULL, *dir = NULL;
	size_t len = 0;
	int ch, r, status = 0, line = 0, job_ready = 0;

	cli_common_init(&cc, "run");
	memset(&f, 0, sizeof f);
	memset(&cache, 0, sizeof cache);
	sd_error_clear(&err);
	optind = 1;
	while ((ch = getopt_long(argc, argv, "+p:n:W:H:s:g:c:o:qvh", longopts,
	    NULL)) != -1) {
		long long v;
		double d;

		if (ch == OPT_HELP || ch == 'h') {
			run_usage(stdout);
			return 0;
		}
		if (ch == OPT_LIST_SAMPLERS) {
			list_samplers(stdout);
			return 0;
		}
		if (ch == OPT_MODEL) {
			f.model = optarg;
			continue;
		}
		if ((r = cli_common_option(&cc, ch, optarg)) == 1)
			continue;
		if (r != 0)
			return r;
		switch (ch) {
		case 'p':
			f.prompt = optarg;
			break;
		case 'n':
			f.negative = optarg;
			break;
		case OPT_UNET:
			f.unet = optarg;
			break;
		case OPT_VAE:
			f.vae = optarg;
			break;
		case OPT_INIT_IMAGE:
			f.init_image = optarg;
			break;
		case OPT_MASK:
			f.mask = optarg;
			break;
		case 'o':
			f.output = optarg;
			break;
		case 'W':
		case 'H':
		case 's':
		case 'c':
		case OPT_CLIP_SKIP:
			if (cli_int("run", ch == 'W' ? "--width" : ch == 'H' ? "--height" :
			    ch == 's' ? "--steps" : ch == 'c' ? "--count" : "--clip-skip",
			    optarg, 1, 1000000, &v) != 0)
				return SD_EUSAGE;
			if (ch == 'W')
				f.width = v, f.has_width = 1;
			else if (ch == 'H')
				f.height = v, f.has_height = 1;
			else if (ch == 's')
				f.steps = v, f.has_steps = 1;
			else if (ch == 'c')
				f.count = v, f.has_count = 1;
			else
				f.clip_skip = v, f.has_clip_skip = 1;
			break;
		case OPT_SEED:
			if (cli_int("run", "--seed", optarg, -1, INT64_MAX, &v) != 0)
				return SD_EUSAGE;
			f.seed = v;
			f.has_seed = 1;
			break;
		case 'g':
			if (cli_number("run", "--guidance", optarg, 0, 100, &d) != 0)
				return SD_EUSAGE;
			f.guidance = d;
			f.has_guidance = 1;
			break;
		case OPT_STRENGTH:
			if (cli_number("run", "--strength", optarg, 0, 1, &d) != 0)
				return SD_EUSAGE;
			f.strength = d;
			f.has_strength = 1;
			break;
		case OPT_SAMPLER:
			/* "DPM++ 2M Karras" sets the schedule too */
			if ((r = sd_sampler_parse_full(optarg, &f.sampler, &f.schedule)) < 0) {
				cli_error("run", "--sampler: unknown sampler \"%s\" (see "
				    "sdbatch run --list-samplers)", optarg);
				return SD_EUSAGE;
			}
			f.has_sampler = 1;
			if (r == 1)
				f.has_schedule = 1;
			break;
		case OPT_SCHEDULE:
			if (sd_schedule_parse(optarg, &f.schedule) < 0) {
				cli_error("run", "--schedule: \"%s\" is not normal or karras",
				    optarg);
				return SD_EUSAGE;
			}
			f.has_schedule = 1;
			break;
		case OPT_RNG:
			if (sd_rng_parse(optarg, &f.rng) < 0) {
				cli_error("run", "--rng: \"%s\" is not cpu or cuda", optarg);
				return SD_EUSAGE;
			}
			f.has_rng = 1;
			break;
		default:
			fputs("Try 'sdbatch run --help'.\n", stderr);
			return SD_EUSAGE;
		}
	}
	if (optind < argc)
		file = argv[optind++];
	if (optind < argc) {
		cli_error("run", "one job at a time (extra argument \"%s\")", argv[optind]);
		return SD_EUSAGE;
	}
	if (file == NULL && f.prompt == NULL) {
		cli_error("run", "give a job file, - for standard input, or --prompt");
		fputs("Try 'sdbatch run --help'.\n", stderr);
		return SD_EUSAGE;
	}
	if ((r = cli_load_config(&cc)) != 0)
		return r;
	job_init(&job, &cc.cfg);
	snprintf(id, sizeof id, "job");
	if (file != NULL) {
		if (strcmp(file, "-") == 0) {
			buf = read_stream(stdin, cc.cfg.limits.yaml.max_document, &len);
			dir = getcwd(NULL, 0);
			file = "<stdin>";
		} else {
			buf = util_read_file(file, cc.cfg.limits.yaml.max_document, 0,
			    &len, &err);
			dir = util_dirname(file);
			id_from_path(file, id, sizeof id);
		}
		if (buf == NULL) {
			cli_error("run", "%s", err.message[0] ? err.message : "out of memory");
			status = err.code ? cli_status(&err) : SD_EINTERNAL;
			goto out;
		}
		if (job_parse(&job, &cc.cfg, buf, len, file, dir, id, &err, &line) < 0) {
			cli_error("run", "%s", err.message);
			status = cli_status(&err);
			goto out;
		}
	} else {
		snprintf(job.id, sizeof job.id, "%s", id);
		job.dir = getcwd(NULL, 0);
	}
	if (f.has_strength && f.init_image == NULL && job.init_image == NULL) {
		cli_error("run", "--strength applies to img2img and inpainting: "
		    "give --init-image");
		status = SD_EUSAGE;
		goto out;
	}
	if (apply_flags(&job, &f) != 0) {
		status = SD_EINTERNAL;
		goto out;
	}
	if (f.model != NULL)
		job.line[JF_MODEL] = 0;
	if (job.prompt == NULL || job.prompt[strspn(job.prompt, " \t\r\n")] == '\0') {
		cli_error("run", "the job has no prompt");
		status = file ? SD_EDATA : SD_EUSAGE;
		goto out;
	}
	if (job_check(&job, &cc.cfg, &err) < 0) {
		cli_error("run", "%s", err.message);
		status = cli_status(&err);
		goto out;
	}
	job_ready = 1;
	cli_signals_install();
	callback_global_init();
	progress_sink_init(&sink);
	memset(&disp, 0, sizeof disp);
	progress_bar_init(&disp.bar, stderr);
	disp.quiet = cc.quiet;
	memset(&env, 0, sizeof env);
	if (cc.progress == PROGRESS_JSON)
		sink.json_fd = STDERR_FILENO;
	else if (cc.progress == PROGRESS_BAR ||
	    (cc.progress == PROGRESS_AUTO && !cc.quiet && isatty(STDERR_FILENO))) {
		sink.display = progress_bar_display;
		sink.display_user = &disp.bar;
		/* a model downloading: a byte-count bar per file */
		env.download = show_download;
		env.download_user = &disp;
	}
	env.cfg = &cc.cfg;
	env.cache = &cache;
	env.sink = &sink;
	env.stop = &cli_stop;
	env.output_path = f.output;
	env.output_root = cc.cfg.output_root;
	env.default_name = "{id}.png";
	env.on_image = print_path;
	if (!cc.quiet) {
		env.notice = print_notice;
		env.notice_user = &disp;
	}
	runjob_run(&env, &job, &res);
	progress_bar_clear(&disp.bar);
	switch (res.status) {
	case RUNJOB_DONE:
		status = 0;
		break;
	case RUNJOB_INTERRUPTED:
		cli_error("run", "interrupted");
		status = SD_EREQUEUED;
		break;
	default:
		cli_error("run", "%s", res.err.message);
		status = cli_status(&res.err);
		break;
	}
	progress_event_init(&ev, res.status == RUNJOB_DONE ? "done" : "failed", job.id);
	ev.images = res.nimages;
	ev.elapsed_s = res.total_s;
	ev.error = res.status == RUNJOB_DONE ? NULL : res.err.message;
	progress_emit(&sink, &ev);
	progress_bar_clear(&disp.bar);
	if (job.callback.url != NULL && res.status != RUNJOB_INTERRUPTED) {
		json_t *rec = result_record(job.id, &job, &res);
		struct callback_outcome o;
		size_t blen = 0;
		char *body = rec ? result_callback_body(rec, job.callback.include_images,
		    &blen) : NULL;
		if (body != NULL && callback_deliver(&job.callback, &cc.cfg.callback,
		    res.status == RUNJOB_DONE ? "job.done" : "job.failed", body, blen,
		    &cli_stop, &o) < 0)
			cli_error("run", "callback to %s failed after %d attempts: %s",
			    job.callback.url, o.attempts, o.last_error);
		else if (body != NULL && cc.verbose)
			cli_error("run", "callback delivered");
		free(body);
		json_decref(rec);
	}
	runjob_result_free(&res);
	model_cache_free(&cache);
out:
	(void)job_ready;
	(void)line;
	job_free(&job);
	free(buf);
	free(dir);
	cli_common_free(&cc);
	return status;
}
