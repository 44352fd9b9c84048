/* cmd_submit.c: `sdbatch submit SPOOL [JOB.yaml | -]`: enqueue a job. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "spool/job.h"
#include "spool/spool.h"
#include "spool/submit.h"
#include "spool/util.h"

static void
submit_usage(FILE *out)
{
	fputs("Usage: sdbatch submit [OPTIONS] SPOOL [JOB.yaml | -]\n"
	    "\n"
	    "Check a job file (see sdbatch-job(5)) and enqueue it into SPOOL atomically\n"
	    "(written to SPOOL/tmp/, then linked into SPOOL/incoming/); print its id.\n"
	    "The id is the file name without .yaml (standard input, -, the default:\n"
	    "a new id from the time).  Relative paths of files next to the job file\n"
	    "(model, unet, vae, init_image, mask) are made absolute, since the job\n"
	    "runs from the spool.\n"
	    "\n"
	    "      --id ID        the job id (letters, digits, '.', '_', '-')\n"
	    "      --config FILE  configuration with the limits to check against\n"
	    "  -q, --quiet        print nothing\n"
	    "  -h, --help         this help\n"
	    "\n"
	    "Exit status: 0 queued, 64 usage, 65 bad job (or the id exists),\n"
	    "66 no such file or spool, 74 I/O error, 78 bad configuration.\n", out);
}

enum { OPT_ID = OPT_COMMON_END };

static char *
read_stdin(size_t max, size_t *len)
{
	size_t n = 0, cap = 4096;
	char *buf = malloc(cap + 1), *nb;

	while (buf != NULL) {
		size_t r;
		if (n == cap) {
			if (cap > max)
				break;
			cap *= 2;
			if ((nb = realloc(buf, cap + 1)) == NULL) {
				free(buf);
				return NULL;
			}
			buf = nb;
		}
		if ((r = fread(buf + n, 1, cap - n, stdin)) == 0)
			break;
		n += r;
	}
	if (buf != NULL)
		buf[n] = '\0';
	*len = n;
	return buf;
}

int
cmd_submit(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"id", required_argument, NULL, OPT_ID},
		{"config", required_argument, NULL, OPT_CONFIG},
		{"quiet", no_argument, NULL, 'q'},
		{"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct cli_common cc;
	struct spool s;
	struct submit_request req;
	struct sd_error err;
	struct stat st;
	const char *spooldir, *file = "-", *given_id = NULL;
	char id[JOB_ID_MAX + 1], fid[JOB_ID_MAX + 1], *buf = NULL, *dir = NULL;
	size_t len = 0;
	int ch, r, status = 0;

	cli_common_init(&cc, "submit");
	optind = 1;
	while ((ch = getopt_long(argc, argv, "qvh", longopts, NULL)) != -1) {
		if (ch == 'h') {
			submit_usage(stdout);
			return 0;
		}
		if (ch == OPT_ID) {
			given_id = optarg;
			continue;
		}
		if ((r = cli_common_option(&cc, ch, optarg)) == 1)
			continue;
		if (r != 0)
			return r;
		fputs("Try 'sdbatch submit --help'.\n", stderr);
		return SD_EUSAGE;
	}
	if (optind >= argc || argc - optind > 2) {
		cli_error("submit", optind >= argc ? "which spool folder?" :
		    "one job at a time");
		fputs("Try 'sdbatch submit --help'.\n", stderr);
		return SD_EUSAGE;
	}
	spooldir = argv[optind];
	if (argc - optind == 2)
		file = argv[optind + 1];
	if (given_id != NULL && !util_valid_id(given_id)) {
		cli_error("submit", "--id: \"%s\" is not a valid job id (1-128 "
		    "characters: letters, digits, '.', '_', '-', starting with a "
		    "letter or digit)", given_id);
		return SD_EUSAGE;
	}
	if ((r = cli_load_config(&cc)) != 0)
		return r;
	sd_error_clear(&err);
	memset(&req, 0, sizeof req);
	if (strcmp(file, "-") == 0) {
		buf = read_stdin(cc.cfg.limits.yaml.max_document, &len);
		dir = getcwd(NULL, 0);
		file = "<stdin>";
	} else {
		const char *base = strrchr(file, '/');
		size_t n;
		buf = util_read_file(file, cc.cfg.limits.yaml.max_document, 0, &len, &err);
		dir = util_dirname(file);
		snprintf(fid, sizeof fid, "%.128s", base ? base + 1 : file);
		n = strlen(fid);
		if (n > 5 && strcmp(fid + n - 5, ".yaml") == 0)
			fid[n - 5] = '\0';
		else if (n > 4 && strcmp(fid + n - 4, ".yml") == 0)
			fid[n - 4] = '\0';
		req.id = fid;
	}
	if (given_id != NULL)
		req.id = given_id;
	if (buf == NULL) {
		cli_error("submit", "%s", err.message[0] ? err.message : "out of memory");
		status = err.code ? cli_status(&err) : SD_EINTERNAL;
		goto out;
	}
	req.data = buf;
	req.len = len;
	req.name = file;
	req.dir = dir ? dir : ".";
	req.absolute_paths = 1;
	if (stat(spooldir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		cli_error("submit", "%s: no such spool folder", spooldir);
		status = SD_ENOINPUT;
		goto out;
	}
	if (spool_open(&s, spooldir, 1, &err) < 0) {
		cli_error("submit", "%s", err.message);
		status = cli_status(&err);
		goto out;
	}
	if (spool_submit_job(&s, &cc.cfg, &req, id, &err, NULL) < 0) {
		cli_error("submit", "%s", err.message);
		status = cli_status(&err);
	} else if (!cc.quiet)
		printf("%s\n", id);
	spool_close(&s);
out:
	free(buf);
	free(dir);
	cli_common_free(&cc);
	return status;
}
