/* common.c: what the subcommands share: options, configuration, signals. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "spool/util.h"
#include "spool/worker.h"

volatile sig_atomic_t cli_stop, cli_reload;
int cli_wake_fd = -1;
static int wake_write_fd = -1;

void
cli_error(const char *command, const char *fmt, ...)
{
	char buf[4096], safe[4 * 4096 + 8];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	/* messages quote job values and file names: control characters
	 * escaped, never raw to a terminal */
	fprintf(stderr, "sdbatch%s%s: %s\n", command ? " " : "",
	    command ? command : "", util_escape_controls(buf, safe, sizeof safe));
}

int
cli_status(const struct sd_error *err)
{
	return err->code > 0 && err->code < 256 ? err->code : SD_EINTERNAL;
}

void
cli_common_init(struct cli_common *cc, const char *command)
{
	memset(cc, 0, sizeof *cc);
	cc->command = command;
	cc->threads = -1;
	cc->progress = PROGRESS_AUTO;
}

void
cli_common_free(struct cli_common *cc)
{
	if (cc->cfg_loaded)
		config_free(&cc->cfg);
	cc->cfg_loaded = 0;
}

int
cli_int(const char *command, const char *option, const char *arg,
    long long lo, long long hi, long long *out)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(arg, &end, 10);
	if (errno != 0 || end == arg || *end != '\0' || v < lo || v > hi) {
		cli_error(command, "%s: \"%s\" is not an integer in %lld..%lld", option,
		    arg, lo, hi);
		return SD_EUSAGE;
	}
	*out = v;
	return 0;
}

int
cli_number(const char *command, const char *option, const char *arg,
    double lo, double hi, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(arg, &end);
	if (errno != 0 || end == arg || *end != '\0' || !isfinite(v) || v < lo || v > hi) {
		cli_error(command, "%s: \"%s\" is not a number in %g..%g", option, arg,
		    lo, hi);
		return SD_EUSAGE;
	}
	*out = v;
	return 0;
}

int
cli_common_option(struct cli_common *cc, int opt, const char *arg)
{
	long long v;

	switch (opt) {
	case OPT_CONFIG:
		cc->config_path = arg;
		return 1;
	case OPT_MODEL:
		cc->model = arg;
		return 1;
	case OPT_TOKENIZER:
		cc->tokenizer = arg;
		return 1;
	case OPT_TEXT_ENCODERS:
		cc->text_encoders = arg;
		return 1;
	case OPT_DEVICE:
		if (!config_device_valid(arg)) {
			cli_error(cc->command, "--device: \"%s\" is not cpu, cuda or cuda:N",
			    arg);
			return SD_EUSAGE;
		}
		cc->device = arg;
		return 1;
	case OPT_THREADS:
		if (cli_int(cc->command, "--threads", arg, 0, 4096, &v) != 0)
			return SD_EUSAGE;
		cc->threads = (int)v;
		return 1;
	case OPT_QUIET:
	case 'q':
		cc->quiet = 1;
		return 1;
	case OPT_VERBOSE:
	case 'v':
		cc->verbose = 1;
		return 1;
	case OPT_PROGRESS:
		if (strcmp(arg, "auto") == 0)
			cc->progress = PROGRESS_AUTO;
		else if (strcmp(arg, "bar") == 0)
			cc->progress = PROGRESS_BAR;
		else if (strcmp(arg, "json") == 0)
			cc->progress = PROGRESS_JSON;
		else if (strcmp(arg, "none") == 0)
			cc->progress = PROGRESS_NONE;
		else {
			cli_error(cc->command, "--progress: \"%s\" is not auto, bar, "
			    "json or none", arg);
			return SD_EUSAGE;
		}
		return 1;
	default:
		return 0;
	}
}

/* Read the configuration into c and apply cc's overrides. */
static int
load_into(struct cli_common *cc, struct sd_config *c, struct sd_error *err)
{
	const char *path = config_locate(cc->config_path);
	int r = 0;

	config_init(c);
	if (path != NULL && config_load(c, path, err) < 0)
		return -1;
	if (cc->model != NULL)
		r |= config_set_string(&c->model, cc->model);
	if (cc->tokenizer != NULL)
		r |= config_set_string(&c->tokenizer, cc->tokenizer);
	if (cc->text_encoders != NULL)
		r |= config_set_string(&c->text_encoders, cc->text_encoders);
	if (cc->device != NULL)
		r |= config_set_string(&c->device, cc->device);
	if (cc->threads >= 0)
		c->threads = cc->threads;
	if (r != 0)
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	return 0;
}

int
cli_load_config(struct cli_common *cc)
{
	struct sd_error err;

	sd_error_clear(&err);
	if (load_into(cc, &cc->cfg, &err) < 0) {
		config_free(&cc->cfg);
		cli_error(cc->command, "%s", err.message);
		return err.code == SD_EINTERNAL ? SD_EINTERNAL : SD_ECONFIG;
	}
	cc->cfg_loaded = 1;
	return 0;
}

int
cli_reload_config(void *user, struct sd_error *err)
{
	struct cli_common *cc = user;
	struct sd_config fresh;

	if (load_into(cc, &fresh, err) < 0) {
		config_free(&fresh);
		return -1;
	}
	config_free(&cc->cfg);
	cc->cfg = fresh;
	cc->cfg.callback.policy = &cc->cfg.policy;	/* not fresh's */
	return 0;
}

static void
on_signal(int sig)
{
	int saved = errno;
	char c = 0;

	if (sig == SIGHUP)
		cli_reload = 1;
	else if (++cli_stop >= 2) {
		/* The second signal: no more waiting for the step to end. */
		worker_emergency_requeue();
		_exit(SD_EREQUEUED);
	}
	if (wake_write_fd >= 0)
		(void)!write(wake_write_fd, &c, 1);
	errno = saved;
}

int
cli_signals_install(void)
{
	struct sigaction sa;
	int p[2];

	if (pipe(p) == 0) {
		fcntl(p[0], F_SETFL, O_NONBLOCK);
		fcntl(p[1], F_SETFL, O_NONBLOCK);
		fcntl(p[0], F_SETFD, FD_CLOEXEC);
		fcntl(p[1], F_SETFD, FD_CLOEXEC);
		cli_wake_fd = p[0];
		wake_write_fd = p[1];
	}
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = 0;
	if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0 ||
	    sigaction(SIGHUP, &sa, NULL) < 0)
		return -1;
	signal(SIGPIPE, SIG_IGN);
	return 0;
}
