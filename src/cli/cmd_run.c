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
	char *params = params_flags_help();

	fputs("Usage: sdbatch run [OPTIONS] [JOB.yaml | -]\n"
	    "       sdbatch run [OPTIONS] --prompt TEXT [JOB OPTIONS]\n"
	    "\n"
	    "Run one job now and print the paths of the PNGs it writes, one a line.\n"
	    "The job comes from a YAML job file (see sdbatch-job(5)), from standard\n"
	    "input (-), or from the options below; options given with a job file\n"
	    "replace its fields.  \"auto\" asks for the model's default.\n"
	    "\n"
	    "Job options:\n", out);
	fputs(params ? params : "", out);
	free(params);
	fputs("  -o, --output PATH       where to write: {id}, {index} and {seed} in the\n"
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

/* getopt_long values of the parameters' flags without a short one:
 * OPT_PARAM + their index in the parameters table. */
enum { OPT_PARAM = 2000, OPT_LIST_SAMPLERS = 1999 };

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

/* The job given by flags: the values, and which were given. */
struct job_flags {
	struct job_params v;
	unsigned char given[64];
	const char *output;
};

/* The options of run: the common ones, the parameters' flags from the
 * table (and their aliases), --output.  Returns a malloc'd array ending
 * in a zeroed entry, and the short options into shortopts. */
static struct option *
run_options(char *shortopts, size_t size)
{
	static const struct option common[] = { CLI_COMMON_OPTIONS };
	size_t nc = sizeof common / sizeof common[0], n = 0, i, k, so = 0;
	struct option *o;

	if (params_count > sizeof ((struct job_flags *)0)->given)
		return NULL;	/* struct job_flags needs more room */
	if ((o = calloc(nc + 2 * params_count + 3, sizeof *o)) == NULL)
		return NULL;
	so += (size_t)snprintf(shortopts + so, size - so, "+");
	for (i = 0; i < nc; i++)
		o[n++] = common[i];
	for (i = 0; i < params_count; i++) {
		const struct param_def *d = &params_table[i];
		int val = d->short_flag ? d->short_flag : OPT_PARAM + (int)i;
		int dup = 0;

		if (d->flag == NULL)
			continue;
		for (k = 0; k < nc; k++)
			dup |= strcmp(common[k].name, d->flag) == 0;
		if (!dup)
			o[n++] = (struct option){ d->flag, d->flag_value != NULL ?
			    no_argument : required_argument, NULL, val };
		if (d->flag_alias != NULL)
			o[n++] = (struct option){ d->flag_alias, d->flag_value != NULL ?
			    no_argument : required_argument, NULL, val };
		if (d->short_flag && so + 3 < size)
			so += (size_t)snprintf(shortopts + so, size - so, "%c:", d->short_flag);
	}
	o[n++] = (struct option){ "output", required_argument, NULL, 'o' };
	o[n++] = (struct option){ "list-samplers", no_argument, NULL, OPT_LIST_SAMPLERS };
	snprintf(shortopts + so, size - so, "o:qvh");
	return o;
}

/* The parameter of an option value, or NULL. */
static const struct param_def *
option_param(int ch)
{
	size_t i;

	if (ch == OPT_MODEL)
		return params_find("model");
	if (ch >= OPT_PARAM && ch < OPT_PARAM + (int)params_count)
		return &params_table[ch - OPT_PARAM];
	for (i = 0; ch > 0 && ch < 256 && i < params_count; i++)
		if (params_table[i].short_flag == ch)
			return &params_table[i];
	return NULL;
}

/* The flags over the job's fields.  A flag's relative path is relative to
 * the current folder, not to the job file's: its line goes. */
static int
apply_flags(struct sd_job *j, const struct job_flags *f)
{
	size_t i;

	for (i = 0; i < params_count; i++) {
		if (!f->given[i])
			continue;
		if (params_copy_one(&params_table[i], &j->params, &f->v) < 0)
			return -1;
		j->line[params_table[i].field] = 0;
	}
	return 0;
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
	struct option *longopts;
	char shortopts[64], why[SD_ERROR_MAX];
	const struct param_def *pd;
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
	size_t len = 0, pi;
	int ch, r, status = 0, line = 0, job_ready = 0;

	cli_common_init(&cc, "run");
	memset(&job, 0, sizeof job);
	memset(&f, 0, sizeof f);
	memset(&cache, 0, sizeof cache);
	sd_error_clear(&err);
	if ((longopts = run_options(shortopts, sizeof shortopts)) == NULL) {
		cli_error("run", "out of memory");
		return SD_EINTERNAL;
	}
	optind = 1;
	while ((ch = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
		if (ch == OPT_HELP || ch == 'h') {
			run_usage(stdout);
			status = 0;
			goto out;
		}
		if (ch == OPT_LIST_SAMPLERS) {
			list_samplers(stdout);
			status = 0;
			goto out;
		}
		if ((pd = option_param(ch)) != NULL) {
			if (params_parse_text(pd, optarg, &f.v, why, sizeof why) < 0) {
				cli_error("run", "--%s: %s", pd->flag, why);
				status = SD_EUSAGE;
				goto out;
			}
			f.given[pd - params_table] = 1;
			/* "DPM++ 2M Karras" gave the schedule too */
			if (pd->field == JF_SAMPLER) {
				enum sd_sampler smp;
				enum sd_schedule sch;
				const struct param_def *sd = params_by_field(JF_SCHEDULE);
				if (sd_sampler_parse_full(optarg, &smp, &sch) == 1 && sd != NULL)
					f.given[sd - params_table] = 1;
			}
			continue;
		}
		if ((r = cli_common_option(&cc, ch, optarg)) == 1)
			continue;
		if (r != 0) {
			status = r;
			goto out;
		}
		if (ch == 'o') {
			f.output = optarg;
			continue;
		}
		fputs("Try 'sdbatch run --help'.\n", stderr);
		status = SD_EUSAGE;
		goto out;
	}
	if (optind < argc)
		file = argv[optind++];
	if (optind < argc) {
		cli_error("run", "one job at a time (extra argument \"%s\")", argv[optind]);
		status = SD_EUSAGE;
		goto out;
	}
	if (file == NULL && !f.given[params_find("prompt") - params_table]) {
		cli_error("run", "give a job file, - for standard input, or --prompt");
		fputs("Try 'sdbatch run --help'.\n", stderr);
		status = SD_EUSAGE;
		goto out;
	}
	if ((r = cli_load_config(&cc)) != 0) {
		status = r;
		goto out;
	}
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
	for (pi = 0; pi < params_count && f.v.init_image == NULL &&
	    job.init_image == NULL; pi++)
		if (f.given[pi] && (params_table[pi].flags & PARAM_IMG2IMG)) {
			cli_error("run", "--%s applies to img2img and inpainting: "
			    "give --init-image", params_table[pi].flag);
			status = SD_EUSAGE;
			goto out;
		}
	if (apply_flags(&job, &f) != 0) {
		status = SD_EINTERNAL;
		goto out;
	}
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
	params_free(&f.v);
	free(longopts);
	free(buf);
	free(dir);
	cli_common_free(&cc);
	return status;
}
