/* cmd_pull.c: `sdbatch pull ID[@REVISION] [FILE...]`: fetch a model from
 * the Hugging Face Hub into the local Hub cache. */
#include "config.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/error.h"
#include "spool/conf.h"
#include "model/hub.h"

int cmd_pull(int argc, char **argv);

static volatile sig_atomic_t pull_stop;

struct pull_display {
	struct progress_bar bar;
	int show_bar;		/* a progress bar (a terminal) */
	int quiet;
};

static void
pull_usage(FILE *out)
{
	fputs("Usage: sdbatch pull [OPTIONS] ID[@REVISION] [FILE...]\n"
	    "\n"
	    "Download a model from the Hugging Face Hub into the local Hub cache, the\n"
	    "one huggingface_hub and diffusers use, and print its local path.  ID is\n"
	    "ORG/NAME; REVISION a branch, tag or commit (default: main).  Without\n"
	    "FILEs, what rendering needs: model_index.json, each part's config and\n"
	    "safetensors weights, the tokenizer and the scheduler config (or, for a\n"
	    "repository holding one part such as a VAE, its config and weights);\n"
	    "ID/FILE names one file.  Files already in the cache are not fetched\n"
	    "again; an interrupted download resumes where it stopped.\n"
	    "\n"
	    "      --config FILE    the configuration, for its hub: section (default:\n"
	    "                       $SDBATCH_CONFIG, else " SDBATCH_SYSCONFDIR "/sdbatch/sdbatch.yaml)\n"
	    "      --fp16           the fp16 variant of the weights where there is one\n"
	    "      --cache DIR      the Hub cache (default: $HF_HUB_CACHE, else\n"
	    "                       $HF_HOME/hub, else ~/.cache/huggingface/hub)\n"
	    "      --endpoint URL   the Hub (default: $HF_ENDPOINT, else\n"
	    "                       " HUB_DEFAULT_ENDPOINT ")\n"
	    "      --progress MODE  auto, bar or none (auto: a bar on a terminal)\n"
	    "  -q, --quiet          no messages but errors\n"
	    "  -h, --help           this help\n"
	    "\n"
	    "The token for private and gated models comes from $HF_TOKEN, else\n"
	    "$HUGGING_FACE_HUB_TOKEN, else the file $HF_TOKEN_PATH or $HF_HOME/token\n"
	    "(`hf auth login` writes it).  With HF_HUB_OFFLINE=1 nothing is downloaded:\n"
	    "pull says whether the cache already holds the model.\n", out);
}

static void
on_signal(int sig)
{
	(void)sig;
	pull_stop = 1;
}

static void
show(void *user, const struct hub_progress *p)
{
	struct pull_display *d = user;
	char label[1200], total[32], count[32] = "";

	if (d->quiet)
		return;
	if (p->count > 0)
		snprintf(count, sizeof count, "[%d/%d] ", p->index, p->count);
	if (p->state == HUB_FILE_PROGRESS) {
		if (d->show_bar) {
			snprintf(label, sizeof label, "%s%s", count, p->file);
			progress_bar_bytes(&d->bar, label, p->done, p->total);
		}
		return;
	}
	progress_bar_clear(&d->bar);
	if (p->state == HUB_FILE_DONE) {
		progress_bar_size(p->total, total, sizeof total);
		fprintf(d->bar.out, "%sdownloaded %s (%s)\n", count, p->file, total);
	} else if (p->state == HUB_FILE_CACHED && d->show_bar)
		fprintf(d->bar.out, "%s%s: in the cache\n", count, p->file);
	fflush(d->bar.out);
}

static void
say(void *user, const char *message)
{
	struct pull_display *d = user;

	if (d->quiet)
		return;
	progress_bar_clear(&d->bar);
	fprintf(d->bar.out, "sdbatch pull: %s\n", message);
	fflush(d->bar.out);
}

int
cmd_pull(int argc, char **argv)
{
	/* OPT_CONFIG and OPT_PROGRESS: cli.h */
	enum { OPT_FP16 = OPT_COMMON_END, OPT_CACHE, OPT_ENDPOINT };
	static const struct option longopts[] = {
		{"config", required_argument, NULL, OPT_CONFIG},
		{"fp16", no_argument, NULL, OPT_FP16},
		{"cache", required_argument, NULL, OPT_CACHE},
		{"endpoint", required_argument, NULL, OPT_ENDPOINT},
		{"progress", required_argument, NULL, OPT_PROGRESS},
		{"quiet", no_argument, NULL, 'q'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct pull_display d;
	struct hub_options o;
	struct sd_error err;
	struct sigaction sa;
	char out[4096];
	const char *progress = "auto", *cache = NULL, *endpoint = NULL,
	    *config_path = NULL, *config_file;
	struct sd_config cfg;
	int ch, r, fp16 = 0;

	memset(&d, 0, sizeof d);
	progress_bar_init(&d.bar, stderr);
	optind = 1;
	while ((ch = getopt_long(argc, argv, "qh", longopts, NULL)) != -1) {
		switch (ch) {
		case OPT_CONFIG:
			config_path = optarg;
			break;
		case OPT_FP16:
			fp16 = 1;
			break;
		case OPT_CACHE:
			cache = optarg;
			break;
		case OPT_ENDPOINT:
			endpoint = optarg;
			break;
		case OPT_PROGRESS:
			if (strcmp(optarg, "auto") != 0 && strcmp(optarg, "bar") != 0 &&
			    strcmp(optarg, "none") != 0) {
				fprintf(stderr, "sdbatch pull: --progress: \"%s\" is not "
				    "auto, bar or none\n", optarg);
				return SD_EUSAGE;
			}
			progress = optarg;
			break;
		case 'q':
			d.quiet = 1;
			break;
		case 'h':
			pull_usage(stdout);
			return 0;
		default:
			pull_usage(stderr);
			return SD_EUSAGE;
		}
	}
	if (optind >= argc) {
		pull_usage(stderr);
		return SD_EUSAGE;
	}
	if (!hub_is_id(argv[optind])) {
		fprintf(stderr, "sdbatch pull: \"%s\" is not a Hugging Face Hub id "
		    "(ORG/NAME, ORG/NAME@REVISION or ORG/NAME[@REVISION]/FILE)\n",
		    argv[optind]);
		return SD_EUSAGE;
	}
	/* the configuration's hub: section, then the options given */
	config_init(&cfg);
	sd_error_clear(&err);
	if ((config_file = config_locate(config_path)) != NULL &&
	    config_load(&cfg, config_file, &err) < 0) {
		fprintf(stderr, "sdbatch pull: %s\n", err.message);
		config_free(&cfg);
		return SD_ECONFIG;
	}
	config_hub_options(&cfg, &o);
	if (cache != NULL)
		o.cache = cache;
	if (endpoint != NULL)
		o.endpoint = endpoint;
	if (fp16)
		o.prefer_fp16 = 1;
	d.show_bar = strcmp(progress, "bar") == 0 ||
	    (strcmp(progress, "auto") == 0 && isatty(STDERR_FILENO));
	o.progress = show;
	o.notice = say;
	o.user = &d;
	o.stop = &pull_stop;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sd_error_clear(&err);
	r = hub_pull(&o, argv[optind], (const char *const *)argv + optind + 1,
	    (size_t)(argc - optind - 1), out, sizeof out, &err);
	progress_bar_clear(&d.bar);
	o.cache = o.endpoint = NULL;
	config_free(&cfg);
	if (r < 0) {
		if (pull_stop)
			fprintf(stderr, "sdbatch pull: interrupted; run it again to resume\n");
		else
			fprintf(stderr, "sdbatch pull: %s\n", err.message);
		return err.code > 0 && err.code < 256 ? err.code : SD_EINTERNAL;
	}
	puts(out);
	return fflush(stdout) == 0 ? 0 : SD_EIO;
}
