/* submit.h: enqueueing a job: the one code path of `sdbatch submit` and of
 * `sdbatch serve`'s POST /v1/jobs.
 *
 * The document is checked exactly as a worker will check it (job_parse:
 * every field, type, range and configured limit; then runjob_check on the
 * job as the worker will read it from SPOOL/running/: its model and files,
 * the trust policy, the model's defaults against the limits, the engine's
 * sampler/strength rules), then staged in SPOOL/tmp/ and linked into
 * SPOOL/incoming/ without replacing anything. */
#ifndef SD_SPOOL_SUBMIT_H
#define SD_SPOOL_SUBMIT_H

#include <stddef.h>

#include "core/error.h"
#include "spool/conf.h"
#include "spool/job.h"
#include "spool/spool.h"

struct submit_request {
	const char *data;	/* the job document (YAML, or JSON: a YAML subset) */
	size_t len;
	const char *name;	/* for messages: the file, "<stdin>", "request" */
	const char *dir;	/* folder relative paths are resolved against */
	const char *id;		/* the job id, or NULL: a new one (submit_new_id) */
	int absolute_paths;	/* make relative paths of files that exist in
				 * dir absolute (model, unet, vae, init_image,
				 * mask), since the job runs from the spool */
};

/* A new job id from the time and 32 random bits: "job-YYYYmmdd-HHMMSS-xxxxxxxx". */
void submit_new_id(char id[JOB_ID_MAX + 1]);

/* Check r's document against cfg and enqueue it into s.  On success 0 and
 * id_out gets the job id.  On error -1 with err: SD_EDATA for a bad job
 * (err->field names the field, *line its line when line is not NULL), a
 * document over the configured size limit or an id that exists already;
 * SD_ENOINPUT for a model or input file that is not there (field and line
 * too); SD_EIO, SD_EINTERNAL otherwise.  The spool is left
 * untouched by a rejected job. */
int spool_submit_job(struct spool *s, const struct sd_config *cfg,
    const struct submit_request *r, char id_out[JOB_ID_MAX + 1],
    struct sd_error *err, int *line);

#endif
