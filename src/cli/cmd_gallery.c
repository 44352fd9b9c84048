/* cmd_gallery.c: `sdbatch gallery SPOOL -o DIR`: the gallery page of a
 * spool as static files, for browsing a shared folder. */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "spool/spool.h"
#include "web/gallery.h"

static void
gallery_usage(FILE *out)
{
	fputs("Usage: sdbatch gallery [OPTIONS] SPOOL -o DIR\n"
	    "\n"
	    "Write the gallery of the spool folder SPOOL into DIR as static files:\n"
	    "DIR/index.html (one page, no JavaScript, nothing fetched from elsewhere),\n"
	    "DIR/images/ID-N.png (hard links to the spool's images where DIR is on\n"
	    "the same file system, else copies) and DIR/thumbs/ID-N.png (thumbnails).\n"
	    "The page shows the newest images\n"
	    "with their prompt, negative prompt, seed, sampler, steps, size, model and\n"
	    "the command line that renders each again, the jobs in progress and the\n"
	    "failed jobs with their error.  Run it again (cron) to refresh.\n"
	    "\n"
	    "  -o, --output DIR    where to write (created when missing)\n"
	    "  -n, --images N      the newest N images (default: serve.gallery_images\n"
	    "                      of the configuration, 100)\n"
	    "      --config FILE   configuration file (the output root, limits)\n"
	    "  -q, --quiet         print nothing but errors\n"
	    "  -h, --help          this help\n"
	    "\n"
	    "Exit status: 0 ok, 64 usage, 66 no such spool, 74 I/O error,\n"
	    "78 bad configuration.\n", out);
}

int
cmd_gallery(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"output", required_argument, NULL, 'o'},
		{"images", required_argument, NULL, 'n'},
		{"config", required_argument, NULL, OPT_CONFIG},
		{"quiet", no_argument, NULL, 'q'},
		{"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct cli_common cc;
	struct spool s;
	struct sd_error err;
	struct stat st;
	const char *out = NULL;
	long long max = -1;
	int ch, r, n = 0;

	cli_common_init(&cc, "gallery");
	optind = 1;
	while ((ch = getopt_long(argc, argv, "o:n:qvh", longopts, NULL)) != -1) {
		if (ch == 'h') {
			gallery_usage(stdout);
			return 0;
		}
		if (ch == 'o') {
			out = optarg;
			continue;
		}
		if (ch == 'n') {
			if (cli_int("gallery", "--images", optarg, 1, 1000000, &max) != 0)
				return SD_EUSAGE;
			continue;
		}
		if ((r = cli_common_option(&cc, ch, optarg)) == 1)
			continue;
		if (r != 0)
			return r;
		fputs("Try 'sdbatch gallery --help'.\n", stderr);
		return SD_EUSAGE;
	}
	if (optind != argc - 1 || out == NULL) {
		cli_error("gallery", optind >= argc ? "which spool folder?" :
		    out == NULL ? "where to? (-o DIR)" : "one spool folder at a time");
		fputs("Try 'sdbatch gallery --help'.\n", stderr);
		return SD_EUSAGE;
	}
	if (stat(argv[optind], &st) < 0 || !S_ISDIR(st.st_mode)) {
		cli_error("gallery", "%s: no such spool folder", argv[optind]);
		return SD_ENOINPUT;
	}
	if ((r = cli_load_config(&cc)) != 0)
		return r;
	sd_error_clear(&err);
	if (spool_open(&s, argv[optind], 0, &err) < 0) {
		cli_error("gallery", "%s", err.message);
		cli_common_free(&cc);
		return cli_status(&err);
	}
	r = gallery_write(&s, &cc.cfg, out, max > 0 ? (int)max :
	    cc.cfg.serve.gallery_images, &n, &err);
	if (r < 0)
		cli_error("gallery", "%s", err.message);
	else if (!cc.quiet)
		printf("%s/index.html: %d image%s\n", out, n, n == 1 ? "" : "s");
	spool_close(&s);
	cli_common_free(&cc);
	return r < 0 ? cli_status(&err) : 0;
}
