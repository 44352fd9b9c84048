/* cli.h: the subcommands of sdbatch and what they share.
 *
 * Every command is `int cmd_NAME(int argc, char **argv)` with argv[0] the
 * command's name; it returns the exit status (SPEC.md: 0 ok, 64 usage,
 * 65 bad job data, 66 missing input, 69 unavailable, 70 internal error,
 * 74 I/O error, 75 interrupted and requeued, 78 bad configuration). */
#ifndef SD_CLI_H
#define SD_CLI_H

#include <getopt.h>
#include <signal.h>
#include <stdio.h>

#include "core/error.h"
#include "spool/conf.h"
#include "spool/progress.h"

int cmd_run(int argc, char **argv);
int cmd_watch(int argc, char **argv);
int cmd_submit(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_cancel(int argc, char **argv);
/* `sdbatch retry SPOOL ID...`: a failed job back to incoming/. */
int cmd_retry(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_make_model(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_gallery(int argc, char **argv);

/* Options every command that renders takes (getopt_long values). */
enum {
	OPT_CONFIG = 1000, OPT_MODEL, OPT_TOKENIZER, OPT_TEXT_ENCODERS, OPT_THREADS, OPT_DEVICE,
	OPT_QUIET, OPT_VERBOSE, OPT_PROGRESS, OPT_HELP,
	OPT_COMMON_END
};

#define CLI_COMMON_OPTIONS \
	{"config", required_argument, NULL, OPT_CONFIG}, \
	{"model", required_argument, NULL, OPT_MODEL}, \
	{"tokenizer", required_argument, NULL, OPT_TOKENIZER}, \
	{"text-encoders", required_argument, NULL, OPT_TEXT_ENCODERS}, \
	{"threads", required_argument, NULL, OPT_THREADS}, \
	{"device", required_argument, NULL, OPT_DEVICE}, \
	{"quiet", no_argument, NULL, OPT_QUIET}, \
	{"verbose", no_argument, NULL, OPT_VERBOSE}, \
	{"progress", required_argument, NULL, OPT_PROGRESS}, \
	{"help", no_argument, NULL, OPT_HELP}

#define CLI_COMMON_HELP \
	"Common options:\n" \
	"      --config FILE     configuration file (default: $SDBATCH_CONFIG, else\n" \
	"                        " SDBATCH_SYSCONFDIR "/sdbatch/sdbatch.yaml if present)\n" \
	"      --model PATH      default model (file, diffusers folder or Hub id)\n" \
	"      --tokenizer DIR   CLIP tokenizer folder (vocab.json, merges.txt), or one\n" \
	"                        holding tokenizer/, tokenizer_2/, tokenizer_3/ (SD3)\n" \
	"      --text-encoders DIR\n" \
	"                        SD3: the text encoders from DIR (clip_l.safetensors,\n" \
	"                        clip_g.safetensors, t5xxl_fp16.safetensors)\n" \
	"      --threads N       CPU threads (0: one per core)\n" \
	"      --device DEV      cpu, cuda or cuda:N\n" \
	"      --progress MODE   auto, bar, json or none (auto: a bar on a terminal)\n" \
	"  -q, --quiet           no messages but errors\n" \
	"  -v, --verbose         more messages\n" \
	"  -h, --help            this help\n"

enum progress_mode { PROGRESS_AUTO, PROGRESS_BAR, PROGRESS_JSON, PROGRESS_NONE };

/* The command-line settings shared by the commands. */
struct cli_common {
	const char *command;		/* "run", "watch", ... for messages */
	const char *config_path;
	const char *model, *tokenizer, *text_encoders, *device;
	int threads;			/* -1: not given */
	int quiet, verbose;
	enum progress_mode progress;
	struct sd_config cfg;
	int cfg_loaded;
};

void cli_common_init(struct cli_common *cc, const char *command);
/* Handle a common option; returns 1 when handled, 0 when not one, or an
 * exit status (64) after printing the problem. */
int cli_common_option(struct cli_common *cc, int opt, const char *arg);
/* Read the configuration and apply the command-line overrides.  Returns 0
 * or an exit status after printing the problem. */
int cli_load_config(struct cli_common *cc);
/* The same into a fresh configuration (SIGHUP): 0, or -1 with err; cc->cfg
 * is replaced only on success. */
int cli_reload_config(void *cc, struct sd_error *err);
void cli_common_free(struct cli_common *cc);

/* "sdbatch CMD: message" on stderr. */
void cli_error(const char *command, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Exit status of an error code (SD_* values are exit statuses). */
int cli_status(const struct sd_error *err);

/* Parse an integer / number option strictly; 0 or 64 after a message. */
int cli_int(const char *command, const char *option, const char *arg,
    long long lo, long long hi, long long *out);
int cli_number(const char *command, const char *option, const char *arg,
    double lo, double hi, double *out);

/* Signals: SIGTERM/SIGINT count into cli_stop (a second one requeues the
 * running job, if any, and exits 75 at once), SIGHUP sets cli_reload.
 * cli_wake_fd becomes readable on any of them. */
extern volatile sig_atomic_t cli_stop, cli_reload;
extern int cli_wake_fd;
int cli_signals_install(void);

/* The progress bar: a display function for struct progress_sink (user is
 * a struct progress_bar), and a byte-count bar for downloads. */
struct progress_bar {
	FILE *out;
	int shown;		/* a bar is on screen */
	double last;		/* time of the last redraw */
	/* the file of the byte-count bar: its label, when it was first
	 * seen and its bytes then (for the rate) */
	char file[512];
	double file_start;
	long long file_start_bytes;
};
void progress_bar_init(struct progress_bar *b, FILE *out);
void progress_bar_display(void *user, const struct progress_event *e);
/* Erase the bar, if one is on screen (before any other output). */
void progress_bar_clear(struct progress_bar *b);
/* Draw the byte-count bar of a file arriving, one line redrawn in place:
 * "LABEL [#####.....]  42% 1.2 MB/3.4 MB 5.6 MB/s" (total < 0: unknown).
 * A new label starts a new file (the rate counts from there); the same
 * label is redrawn at most ten times a second, and always when done
 * reaches total.  On a terminal the label is shortened to fit a line. */
void progress_bar_bytes(struct progress_bar *b, const char *label,
    long long done, long long total);
/* A byte count as text: "512 B", "1.2 kB", "3.4 MB", "1.23 GB", "?" when
 * negative. */
void progress_bar_size(long long n, char *buf, size_t size);

#endif
