/* result.h: the result record (done/ID.json, failed/ID.json, the callback
 * body): id, status, images (path, seed, width, height, sha256),
 * parameters (every effective value), model (path, arch), timings
 * (load_s, sample_s, decode_s, total_s, per_step_s), worker (host, pid),
 * metadata, error (code, message, field, line), callback (status,
 * attempts, last_error). */
#ifndef SD_SPOOL_RESULT_H
#define SD_SPOOL_RESULT_H

#include <jansson.h>

#include "spool/callback.h"
#include "spool/job.h"
#include "spool/runjob.h"

/* The record of a job that ran (job may be NULL for a job that could not
 * be parsed: then parameters are null). */
json_t *result_record(const char *id, const struct sd_job *job,
    const struct runjob_result *res);

/* The record of a job rejected before it ran. */
json_t *result_rejected(const char *id, const struct sd_job *job,
    const struct sd_error *err, int line);

/* Add callback (status, attempts, last_error, delivery_id) to a record. */
void result_set_callback(json_t *record, const struct callback_outcome *o);

/* The callback body: the record, with each image's PNG as base64 under
 * images[].png_base64 when include_images.  Returns malloc'd JSON text. */
char *result_callback_body(json_t *record, int include_images, size_t *len);

/* The record as text for a file (indented, ending in a newline). */
char *result_text(json_t *record, size_t *len);

#endif
