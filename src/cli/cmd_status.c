/* cmd_status.c: `sdbatch status SPOOL [ID]`: what the spool holds. */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli/cli.h"
#include "spool/spool.h"
#include "spool/util.h"

static void
status_usage(FILE *out)
{
	fputs("Usage: sdbatch status [--json] SPOOL [ID]\n"
	    "\n"
	    "List the jobs of SPOOL: queued, running (with progress and worker), done\n"
	    "and failed (with the error).  With ID, that job only (its result record\n"
	    "when it has finished).\n"
	    "\n"
	    "      --json   JSON on stdout: an array of jobs, or one job with ID\n"
	    "  -h, --help   this help\n"
	    "\n"
	    "Exit status: 0 ok, 64 usage, 66 no such spool or job.\n", out);
}

enum { OPT_JSON = OPT_COMMON_END };

static const char *
jstr(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s != NULL ? s : "";
}

static json_t *
entry_json(const struct spool_entry *e)
{
	json_t *o = json_object();
	char when[40];
	const char *st = spool_state_name(e->state);

	if (e->record != NULL && strcmp(jstr(e->record, "status"), "cancelled") == 0)
		st = "cancelled";
	json_object_set_new(o, "id", json_string(e->id));
	json_object_set_new(o, "state", json_string(st));
	util_rfc3339(e->mtime, when, sizeof when);
	json_object_set_new(o, "since", json_string(when));
	if (e->claim != NULL)
		json_object_set_new(o, "worker", json_pack("{s:O?, s:O?, s:O?}",
		    "host", json_object_get(e->claim, "host"),
		    "pid", json_object_get(e->claim, "pid"),
		    "started", json_object_get(e->claim, "started")));
	if (e->progress != NULL)
		json_object_set(o, "progress", e->progress);
	if (e->record != NULL)
		json_object_set(o, "result", e->record);
	return o;
}

static void
detail(const struct spool_entry *e, char *buf, size_t size)
{
	buf[0] = '\0';
	if (e->state == SPOOL_RUNNING) {
		json_t *p = e->progress;
		const char *ev = p ? jstr(p, "event") : "";
		char who[160] = "";
		if (e->claim != NULL)
			snprintf(who, sizeof who, " on %s pid %lld", jstr(e->claim, "host"),
			    (long long)json_integer_value(json_object_get(e->claim, "pid")));
		if (p != NULL && strcmp(ev, "step") == 0)
			snprintf(buf, size, "image %lld/%lld step %lld/%lld eta %.0fs%s",
			    json_integer_value(json_object_get(p, "image")) + 1,
			    json_integer_value(json_object_get(p, "images")),
			    json_integer_value(json_object_get(p, "step")),
			    json_integer_value(json_object_get(p, "steps")),
			    json_number_value(json_object_get(p, "eta_s")), who);
		else
			snprintf(buf, size, "%s%s", p ? ev : "claimed", who);
	} else if (e->state == SPOOL_DONE && e->record != NULL) {
		size_t n = json_array_size(json_object_get(e->record, "images"));
		snprintf(buf, size, "%zu image%s, %.1f s", n, n == 1 ? "" : "s",
		    json_number_value(json_object_get(json_object_get(e->record,
		    "timings"), "total_s")));
	} else if (e->state == SPOOL_FAILED && e->record != NULL) {
		json_t *er = json_object_get(e->record, "error");
		snprintf(buf, size, "%s", jstr(er, "message"));
	}
}

int
cmd_status(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"json", no_argument, NULL, OPT_JSON},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct spool s;
	struct spool_entry *e = NULL;
	struct sd_error err;
	const char *id = NULL;
	int ch, json = 0, n, i, status = 0;
	int counts[5] = { 0 }, ncancelled = 0;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'h':
			status_usage(stdout);
			return 0;
		case OPT_JSON:
			json = 1;
			break;
		default:
			fputs("Try 'sdbatch status --help'.\n", stderr);
			return SD_EUSAGE;
		}
	}
	if (optind >= argc || argc - optind > 2) {
		cli_error("status", optind >= argc ? "which spool folder?" :
		    "too many arguments");
		fputs("Try 'sdbatch status --help'.\n", stderr);
		return SD_EUSAGE;
	}
	if (argc - optind == 2)
		id = argv[optind + 1];
	sd_error_clear(&err);
	if (spool_open(&s, argv[optind], 0, &err) < 0) {
		cli_error("status", "%s", err.message);
		return cli_status(&err);
	}
	n = spool_list(&s, id, &e, &err);
	if (n < 0) {
		cli_error("status", "%s", err.message);
		spool_close(&s);
		return cli_status(&err);
	}
	if (id != NULL && n == 0) {
		cli_error("status", "no job %s in %s", id, argv[optind]);
		status = SD_ENOINPUT;
	} else if (json) {
		json_t *out;
		char *text;
		if (id != NULL)
			out = entry_json(&e[n - 1]);
		else {
			out = json_array();
			for (i = 0; i < n; i++)
				json_array_append_new(out, entry_json(&e[i]));
		}
		text = json_dumps(out, SD_JSON_FILE);
		if (text != NULL)
			printf("%s\n", text);
		free(text);
		json_decref(out);
	} else {
		if (n > 0)
			printf("%-32s %-9s %s\n", "ID", "STATE", "DETAIL");
		for (i = 0; i < n; i++) {
			char d[512], safe[4 * 512 + 8];
			const char *st = spool_state_name(e[i].state);
			int cancelled = e[i].record != NULL &&
			    strcmp(jstr(e[i].record, "status"), "cancelled") == 0;
			if (cancelled)
				st = "cancelled";
			detail(&e[i], d, sizeof d);
			/* an error may quote job values: never raw to a terminal */
			printf("%-32s %-9s %s\n", e[i].id, st,
			    util_escape_controls(d, safe, sizeof safe));
			if (cancelled)
				ncancelled++;
			else
				counts[e[i].state]++;
		}
		if (id == NULL)
			printf("%d queued, %d running, %d done, %d failed, %d cancelled\n",
			    counts[SPOOL_QUEUED], counts[SPOOL_RUNNING], counts[SPOOL_DONE],
			    counts[SPOOL_FAILED], ncancelled);
	}
	spool_list_free(e, n);
	spool_close(&s);
	return status;
}
