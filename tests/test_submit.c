/* test_submit.c: spool_submit_job, the one submission path of `sdbatch
 * submit` and `sdbatch serve`: a good job is queued under its id, a bad one
 * is rejected with the field to blame and leaves the spool as it was. */
#include "config.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spool/conf.h"
#include "spool/spool.h"
#include "spool/submit.h"
#include "spool/util.h"
#include "tap.h"
#include "testutil.h"

static char root[] = "/tmp/sdbatch-test-submit-XXXXXX";

/* Files in root/sub (dotfiles too). */
static int
files_in(const char *sub)
{
	char p[512];
	struct dirent *de;
	DIR *d;
	int n = 0;

	snprintf(p, sizeof p, "%s/%s", root, sub);
	if ((d = opendir(p)) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

static int
submit(struct spool *s, const struct sd_config *cfg, const char *text,
    const char *id, const char *dir, int abs, char *out, struct sd_error *err,
    int *line)
{
	struct submit_request r;

	memset(&r, 0, sizeof r);
	r.data = text;
	r.len = strlen(text);
	r.name = "request";
	r.id = id;
	r.dir = dir;
	r.absolute_paths = abs;
	sd_error_clear(err);
	return spool_submit_job(s, cfg, &r, out, err, line);
}

int
main(void)
{
	struct sd_config cfg;
	struct spool s;
	struct sd_error err;
	char id[JOB_ID_MAX + 1], p[600], *text, *big;
	size_t len;
	int line, n;
	static const struct {
		const char *job, *field;
	} bad[] = {
		{ "prompt: a\nstpes: 3\n", "stpes" },
		{ "steps: 3\n", "prompt" },
		{ "prompt: a\nwidth: 65\n", "width" },
		{ "prompt: a\ncount: 99\n", "count" },
		{ "prompt: a\ncallback: {url: ftp://x}\n", "callback.url" },
		{ "{\"prompt\": \"a\", \"sampler\": \"magic\"}", "sampler" },
		{ "- a list\n", "" },
	};

	const char *model = shared_path("testdata/sd15-tiny/model.safetensors");

	if (model == NULL || access(model, R_OK) != 0)
		return tap_skip_all("no tiny model in ../shared/testdata");
	if (mkdtemp(root) == NULL)
		return tap_skip_all("mkdtemp failed");
	config_init(&cfg);
	sd_error_clear(&err);
	if (spool_open(&s, root, 1, &err) < 0)
		return tap_skip_all("spool_open: %s", err.message);

	/* A job that can never run is refused: no model given nor
	 * configured (then the tiny model is the configured one). */
	tap_ok(submit(&s, &cfg, "prompt: a\n", NULL, root, 0, id, &err, &line) < 0 &&
	    err.code == SD_ENOINPUT && strcmp(err.field, "model") == 0,
	    "no model at all: SD_ENOINPUT naming model (%s)", err.message);
	cfg.model = strdup(model);

	/* A good job with a new id. */
	tap_ok(submit(&s, &cfg, "{\"prompt\": \"a cat\", \"steps\": 2}", NULL, root, 0,
	    id, &err, &line) == 0, "a good job is queued (%s)", err.message);
	tap_ok(strncmp(id, "job-", 4) == 0 && util_valid_id(id) && strlen(id) == 28,
	    "a new id: job-YYYYmmdd-HHMMSS-xxxxxxxx (%s)", id);
	snprintf(p, sizeof p, "%s/incoming/%s.yaml", root, id);
	text = util_read_file(p, 1 << 20, 1, &len, NULL);
	tap_ok(text != NULL && strcmp(text, "{\"prompt\": \"a cat\", \"steps\": 2}") == 0,
	    "its file holds the document as given");
	free(text);

	/* A given id; the same id again. */
	tap_ok(submit(&s, &cfg, "prompt: dog\n", "dog-1", root, 0, id, &err, NULL) == 0 &&
	    strcmp(id, "dog-1") == 0, "a given id is kept");
	tap_ok(submit(&s, &cfg, "prompt: dog\n", "dog-1", root, 0, id, &err, NULL) < 0 &&
	    err.code == SD_EDATA, "the same id again: SD_EDATA (%s)", err.message);
	tap_ok(submit(&s, &cfg, "prompt: dog\n", "../x", root, 0, id, &err, NULL) < 0 &&
	    err.code == SD_EDATA && strcmp(err.field, "id") == 0,
	    "a bad id: SD_EDATA naming the id");

	/* Bad jobs name the field and leave nothing behind. */
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		n = submit(&s, &cfg, bad[i].job, NULL, root, 0, id, &err, &line);
		tap_ok(n < 0 && err.code == SD_EDATA && strcmp(err.field, bad[i].field) == 0,
		    "bad job %zu rejected, field \"%s\" (got \"%s\": %s)", i + 1,
		    bad[i].field, err.field, err.message);
	}
	big = malloc(cfg.limits.yaml.max_document + 16);
	if (big != NULL) {
		memset(big, ' ', cfg.limits.yaml.max_document + 15);
		memcpy(big, "prompt: a\n", 10);
		big[cfg.limits.yaml.max_document + 15] = '\0';
		tap_ok(submit(&s, &cfg, big, NULL, root, 0, id, &err, NULL) < 0 &&
		    err.code == SD_EDATA && strstr(err.message, "limit") != NULL,
		    "a document over limits.job_size is rejected (%s)", err.message);
		free(big);
	}
	n = submit(&s, &cfg, "prompt: a\nwidth: 64\nheight: 64\ninit_image: nope.png\n",
	    NULL, root, 0, id, &err, &line);
	tap_ok(n < 0 && err.code == SD_ENOINPUT && strcmp(err.field, "init_image") == 0 &&
	    line == 4, "a missing init_image: SD_ENOINPUT, field and line (%s)", err.message);
	cfg.limits.width = 256;
	n = submit(&s, &cfg, "prompt: a\nheight: 64\n", NULL, root, 0, id, &err, &line);
	tap_ok(n < 0 && err.code == SD_EDATA && strcmp(err.field, "width") == 0 &&
	    strstr(err.message, "the model's default") != NULL,
	    "the model's default width over limits.width (%s)", err.message);
	cfg.limits.width = 2048;
	tap_ok(files_in("incoming") == 2, "incoming/ holds the two good jobs only (%d)",
	    files_in("incoming"));
	tap_ok(files_in("tmp") == 0, "tmp/ is empty (%d)", files_in("tmp"));

	/* absolute_paths: a relative path of a file that exists in dir. */
	snprintf(p, sizeof p, "%s/in.png", root);
	FILE *f = fopen(p, "w");
	if (f != NULL)
		fclose(f);
	tap_ok(submit(&s, &cfg, "prompt: x\ninit_image: in.png  # a comment\nstrength: 0.5\n",
	    "rel", root, 1, id, &err, NULL) == 0, "a job with a relative path (%s)",
	    err.message);
	snprintf(p, sizeof p, "%s/incoming/rel.yaml", root);
	text = util_read_file(p, 1 << 20, 1, &len, NULL);
	snprintf(p, sizeof p, "init_image: \"%s/in.png\"  # a comment", root);
	tap_ok(text != NULL && strstr(text, p) != NULL,
	    "absolute_paths: made absolute, the comment kept");
	free(text);
	/* without absolute_paths (serve), a relative path is where the
	 * worker looks: against SPOOL/running/ */
	tap_ok(submit(&s, &cfg, "prompt: x\ninit_image: in.png\nstrength: 0.5\n",
	    "rel2", root, 0, id, &err, NULL) < 0 && err.code == SD_ENOINPUT,
	    "without absolute_paths: not found in running/ (%s)", err.message);
	snprintf(p, sizeof p, "%s/running/in.png", root);
	if ((f = fopen(p, "w")) != NULL)
		fclose(f);
	tap_ok(submit(&s, &cfg, "prompt: x\ninit_image: in.png\nstrength: 0.5\n",
	    "rel2", root, 0, id, &err, NULL) == 0, "without absolute_paths (%s)",
	    err.message);
	snprintf(p, sizeof p, "%s/incoming/rel2.yaml", root);
	text = util_read_file(p, 1 << 20, 1, &len, NULL);
	tap_ok(text != NULL && strstr(text, "init_image: in.png\n") != NULL,
	    "the path stays as given");
	free(text);

	spool_close(&s);
	config_free(&cfg);
	snprintf(p, sizeof p, "rm -rf '%s'", root);
	if (system(p) != 0)
		tap_diag("could not remove %s", root);
	return tap_done();
}
