/* cmd_retry.c: `sdbatch retry SPOOL ID...`. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "spool/spool.h"

static void
retry_usage(FILE *out)
{
	fputs("Usage: sdbatch retry [OPTIONS] SPOOL ID...\n"
	    "\n"
	    "Run failed (or cancelled) jobs again under their ids: each job file goes\n"
	    "back from SPOOL/failed/ to incoming/, and its old result record is kept\n"
	    "in SPOOL/failed/.history/ID-TIME.json.\n"
	    "\n"
	    "  -q, --quiet         print nothing\n"
	    "  -h, --help          this help\n"
	    "\n"
	    "Exit status: 0 ok, 64 usage, 65 the job is not failed (queued, running,\n"
	    "done), 66 no such job or spool.\n", out);
}

int
cmd_retry(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"quiet", no_argument, NULL, 'q'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct spool s;
	struct sd_error err;
	int ch, quiet = 0, i, status = 0;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "qh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'h':
			retry_usage(stdout);
			return 0;
		case 'q':
			quiet = 1;
			break;
		default:
			fputs("Try 'sdbatch retry --help'.\n", stderr);
			return SD_EUSAGE;
		}
	}
	if (argc - optind < 2) {
		cli_error("retry", optind >= argc ? "which spool folder?" : "which job?");
		fputs("Try 'sdbatch retry --help'.\n", stderr);
		return SD_EUSAGE;
	}
	sd_error_clear(&err);
	if (spool_open(&s, argv[optind], 0, &err) < 0) {
		cli_error("retry", "%s", err.message);
		return cli_status(&err);
	}
	for (i = optind + 1; i < argc; i++) {
		if (spool_retry(&s, argv[i], &err) < 0) {
			cli_error("retry", "%s", err.message);
			if (status == 0)
				status = cli_status(&err);
			continue;
		}
		if (!quiet)
			printf("%s: queued again\n", argv[i]);
	}
	spool_close(&s);
	return status;
}
