/* cmd_watch.c: `sdbatch watch SPOOL`: the spool worker. */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "spool/callback.h"
#include "spool/worker.h"

static void
watch_usage(FILE *out)
{
	fputs("Usage: sdbatch watch [OPTIONS] SPOOL\n"
	    "\n"
	    "Claim and run the jobs of the spool folder SPOOL until SIGTERM or SIGINT.\n"
	    "Job files (*.yaml, *.yml) are dropped into SPOOL/incoming/ (write them in\n"
	    "SPOOL/tmp/ and rename them, or use `sdbatch submit`); results appear in\n"
	    "SPOOL/done/ and SPOOL/failed/, images in SPOOL/output/ID/, progress in\n"
	    "SPOOL/logs/ID.jsonl.  Several workers, on one host or on many sharing the\n"
	    "spool, may watch one spool.  The missing folders are created.\n"
	    "\n"
	    "  -1, --once            run what is queued, then exit (cron, Slurm)\n"
	    "      --poll SECONDS    look for new jobs this often (default 2; inotify\n"
	    "                        wakes the worker earlier where it works)\n"
	    "\n" CLI_COMMON_HELP
	    "\n"
	    "Signals: SIGTERM or SIGINT stops at the next sampling step, puts the job\n"
	    "back into incoming/ and exits 75 (0 when no job was running); a second\n"
	    "one exits at once.  SIGHUP reloads the configuration.\n"
	    "\n"
	    "Exit status: 0 ok, 64 usage, 66 no such spool, 74 I/O error,\n"
	    "75 interrupted (job requeued), 78 bad configuration.  With --once, a job\n"
	    "that failed makes it that job's status (65 bad job data, 66 a missing\n"
	    "input, 70 internal error, ...; the first one's), also over 75.\n", out);
}

enum { OPT_ONCE = OPT_COMMON_END, OPT_POLL };

int
cmd_watch(int argc, char **argv)
{
	static const struct option longopts[] = {
		CLI_COMMON_OPTIONS,
		{"once", no_argument, NULL, '1'},
		{"poll", required_argument, NULL, OPT_POLL},
		{NULL, 0, NULL, 0},
	};
	struct cli_common cc;
	struct worker w;
	struct sd_error err;
	double poll = 0;
	int ch, r, once = 0;

	cli_common_init(&cc, "watch");
	optind = 1;
	while ((ch = getopt_long(argc, argv, "1qvh", longopts, NULL)) != -1) {
		if (ch == OPT_HELP || ch == 'h') {
			watch_usage(stdout);
			return 0;
		}
		if ((r = cli_common_option(&cc, ch, optarg)) == 1)
			continue;
		if (r != 0)
			return r;
		switch (ch) {
		case '1':
			once = 1;
			break;
		case OPT_POLL:
			if (cli_number("watch", "--poll", optarg, 0.01, 3600, &poll) != 0)
				return SD_EUSAGE;
			break;
		default:
			fputs("Try 'sdbatch watch --help'.\n", stderr);
			return SD_EUSAGE;
		}
	}
	if (optind != argc - 1) {
		cli_error("watch", optind >= argc ? "which spool folder?" :
		    "one spool folder at a time");
		fputs("Try 'sdbatch watch --help'.\n", stderr);
		return SD_EUSAGE;
	}
	if ((r = cli_load_config(&cc)) != 0)
		return r;
	if (cli_signals_install() < 0) {
		cli_error("watch", "cannot install signal handlers");
		cli_common_free(&cc);
		return SD_EINTERNAL;
	}
	callback_global_init();
	memset(&w, 0, sizeof w);
	w.spool_dir = argv[optind];
	w.cfg = &cc.cfg;
	w.once = once;
	w.poll_s = poll;
	w.verbose = cc.verbose;
	w.quiet = cc.quiet;
	w.json_fd = cc.progress == PROGRESS_JSON ? STDERR_FILENO : -1;
	w.stop = &cli_stop;
	w.reload = &cli_reload;
	w.wake_fd = cli_wake_fd;
	w.reload_config = cli_reload_config;
	w.reload_user = &cc;
	sd_error_clear(&err);
	r = worker_run(&w, &err);
	if (r != 0 && r != SD_EREQUEUED && err.message[0] != '\0')
		cli_error("watch", "%s", err.message);
	/* --once (cron, Slurm): a failed job fails the run, so that the
	 * scheduler's accounting shows it; an interrupted job is requeued
	 * and retried, a failed one is not. */
	if (once && w.failed_status != 0 && (r == 0 || r == SD_EREQUEUED)) {
		cli_error("watch", "%d job%s failed", w.failed, w.failed == 1 ? "" : "s");
		r = w.failed_status;
	}
	cli_common_free(&cc);
	return r;
}
