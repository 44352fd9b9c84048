/* cmd_serve.c: `sdbatch serve SPOOL [--listen ADDR:PORT]`: the HTTP API,
 * server-sent progress and the gallery in front of a spool. */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#ifdef HAVE_MICROHTTPD
#include "spool/util.h"
#include "web/server.h"
#endif

static void
serve_usage(FILE *out)
{
	fputs("Usage: sdbatch serve [OPTIONS] SPOOL\n"
	    "\n"
	    "Put an HTTP API, server-sent progress and a gallery in front of the spool\n"
	    "folder SPOOL.  The spool stays the queue: `sdbatch watch` workers run the\n"
	    "jobs, and jobs survive a restart of the server.\n"
	    "\n"
	    "  POST   /v1/jobs                 submit a job (JSON) -> 202 {job_id, stream_url}\n"
	    "  GET    /v1/jobs/ID              status, and the result record when finished\n"
	    "  GET    /v1/jobs/ID/stream       progress as server-sent events (Last-Event-ID)\n"
	    "  GET    /v1/jobs/ID/images/N.png the images\n"
	    "  DELETE /v1/jobs/ID              cancel\n"
	    "  GET    /                        the gallery\n"
	    "\n"
	    "      --listen ADDR:PORT  where to listen (default: serve.listen of the\n"
	    "                        configuration, else 127.0.0.1:8080; port 0: any free\n"
	    "                        one).  Any address but a loopback one needs a bearer\n"
	    "                        token: serve.token, or SDBATCH_SERVE_TOKEN.\n"
	    "      --config FILE     configuration file\n"
	    "  -q, --quiet           print nothing but errors\n"
	    "  -v, --verbose         a line on stderr for every request\n"
	    "  -h, --help            this help\n"
	    "\n"
	    "SIGTERM or SIGINT ends the server (open event streams end; clients resume\n"
	    "them from the server's next start with Last-Event-ID); SIGHUP is ignored\n"
	    "(restart it to read the configuration again).\n"
	    "\n"
	    "Exit status: 0 ok, 64 usage, 66 no such spool, 69 not built in or cannot\n"
	    "listen, 78 bad configuration.\n", out);
}

enum { OPT_LISTEN = OPT_COMMON_END };

int
cmd_serve(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"listen", required_argument, NULL, OPT_LISTEN},
		{"config", required_argument, NULL, OPT_CONFIG},
		{"quiet", no_argument, NULL, 'q'},
		{"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct cli_common cc;
	const char *listen = NULL;
	int ch, r;

	cli_common_init(&cc, "serve");
	optind = 1;
	while ((ch = getopt_long(argc, argv, "qvh", longopts, NULL)) != -1) {
		if (ch == 'h') {
			serve_usage(stdout);
			return 0;
		}
		if (ch == OPT_LISTEN) {
			listen = optarg;
			continue;
		}
		if ((r = cli_common_option(&cc, ch, optarg)) == 1)
			continue;
		if (r != 0)
			return r;
		fputs("Try 'sdbatch serve --help'.\n", stderr);
		return SD_EUSAGE;
	}
	if (optind != argc - 1) {
		cli_error("serve", optind >= argc ? "which spool folder?" :
		    "one spool folder at a time");
		fputs("Try 'sdbatch serve --help'.\n", stderr);
		return SD_EUSAGE;
	}
#ifndef HAVE_MICROHTTPD
	(void)listen;
	cli_error("serve", "not built into this sdbatch (configure found no "
	    "libmicrohttpd; on Debian install libmicrohttpd-dev and rebuild)");
	return SD_EUNAVAILABLE;
#else
	{
		struct web_server *w;
		struct sd_error err;
		struct stat st;

		if (stat(argv[optind], &st) < 0 || !S_ISDIR(st.st_mode)) {
			cli_error("serve", "%s: no such spool folder", argv[optind]);
			return SD_ENOINPUT;
		}
		if ((r = cli_load_config(&cc)) != 0)
			return r;
		if (cli_signals_install() < 0) {
			cli_error("serve", "cannot install signal handlers");
			cli_common_free(&cc);
			return SD_EINTERNAL;
		}
		sd_error_clear(&err);
		if ((w = web_start(argv[optind], &cc.cfg, listen, cc.verbose, &err)) == NULL) {
			cli_error("serve", "%s", err.message);
			cli_common_free(&cc);
			return cli_status(&err);
		}
		if (!cc.quiet)
			fprintf(stderr, "sdbatch serve: listening on %s/ (spool %s)\n",
			    web_url(w), argv[optind]);
		while (!cli_stop) {
			char buf[64];
			util_sleep(3600, &cli_stop, cli_wake_fd);
			/* SIGHUP (cli_reload) has nothing to reload here: the
			 * configuration is read once; drain the wake-up pipe. */
			while (read(cli_wake_fd, buf, sizeof buf) > 0)
				;
			cli_reload = 0;
		}
		if (!cc.quiet)
			fprintf(stderr, "sdbatch serve: stopping\n");
		web_stop(w);
		cli_common_free(&cc);
		return 0;
	}
#endif
}
