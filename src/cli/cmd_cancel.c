/* cmd_cancel.c: `sdbatch cancel SPOOL ID`. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "spool/spool.h"
#include "spool/util.h"

static void
cancel_usage(FILE *out)
{
	fputs("Usage: sdbatch cancel [OPTIONS] SPOOL ID...\n"
	    "\n"
	    "Cancel jobs: a queued job goes to SPOOL/failed/ at once (status\n"
	    "\"cancelled\"); a running one is asked to stop, and its worker stops at the\n"
	    "next sampling step and moves it to failed/ the same way.\n"
	    "\n"
	    "  -w, --wait          wait until the running jobs have stopped\n"
	    "      --timeout SEC   with --wait: give up after SEC seconds (exit 75)\n"
	    "  -q, --quiet         print nothing\n"
	    "  -h, --help          this help\n"
	    "\n"
	    "Exit status: 0 ok, 64 usage, 65 the job has finished already,\n"
	    "66 no such job or spool, 75 --wait timed out.\n", out);
}

enum { OPT_TIMEOUT = OPT_COMMON_END };

int
cmd_cancel(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"wait", no_argument, NULL, 'w'},
		{"timeout", required_argument, NULL, OPT_TIMEOUT},
		{"quiet", no_argument, NULL, 'q'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct spool s;
	struct sd_error err;
	double timeout = 0;
	int ch, wait = 0, quiet = 0, i, status = 0;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "wqh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'h':
			cancel_usage(stdout);
			return 0;
		case 'w':
			wait = 1;
			break;
		case 'q':
			quiet = 1;
			break;
		case OPT_TIMEOUT:
			if (cli_number("cancel", "--timeout", optarg, 0, 1e7, &timeout) != 0)
				return SD_EUSAGE;
			break;
		default:
			fputs("Try 'sdbatch cancel --help'.\n", stderr);
			return SD_EUSAGE;
		}
	}
	if (argc - optind < 2) {
		cli_error("cancel", optind >= argc ? "which spool folder?" : "which job?");
		fputs("Try 'sdbatch cancel --help'.\n", stderr);
		return SD_EUSAGE;
	}
	sd_error_clear(&err);
	if (spool_open(&s, argv[optind], 0, &err) < 0) {
		cli_error("cancel", "%s", err.message);
		return cli_status(&err);
	}
	for (i = optind + 1; i < argc; i++) {
		enum spool_state st;
		const char *id = argv[i];

		if (spool_cancel(&s, id, &st, &err) < 0) {
			cli_error("cancel", "%s", err.message);
			if (status == 0)
				status = cli_status(&err);
			continue;
		}
		if (st == SPOOL_QUEUED) {
			if (!quiet)
				printf("%s: cancelled (it was queued)\n", id);
			continue;
		}
		if (!quiet)
			printf("%s: cancel requested (it is running; it stops at its next "
			    "step)\n", id);
		if (wait) {
			double start = util_now_mono();
			while (spool_find(&s, id, NULL) == SPOOL_RUNNING) {
				if (timeout > 0 && util_now_mono() - start > timeout) {
					cli_error("cancel", "%s: still running after %g s", id,
					    timeout);
					status = SD_EREQUEUED;
					break;
				}
				util_sleep(0.1, NULL, -1);
			}
			if (status == 0 && !quiet)
				printf("%s: %s\n", id, spool_state_name(spool_find(&s, id, NULL)));
		}
	}
	spool_close(&s);
	return status;
}
