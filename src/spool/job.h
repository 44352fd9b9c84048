/* job.h: job files (see sdbatch-job(5)): parsing and validation.
 *
 * A job is one YAML mapping.  Every field is checked here: its type, its
 * range, the configured limits, paths that must exist; an error names the
 * file, the line and the field.  Defaults come from the configuration. */
#ifndef SD_SPOOL_JOB_H
#define SD_SPOOL_JOB_H

#include <stdint.h>

#include <jansson.h>

#include "core/error.h"
#include "sample/pipeline.h"
#include "spool/conf.h"
#include "spool/params.h"

#define JOB_ID_MAX 128

/* The name of a field ("guidance_scale"). */
const char *job_field_name(enum job_field f);

struct job_callback {
	char *url;		/* http:// or https:// */
	char *secret_env;	/* name of the environment variable, or NULL */
	int include_images;
};

struct sd_job {
	char id[JOB_ID_MAX + 1];
	char *file;		/* the job file, or "-" / NULL */
	char *dir;		/* folder for relative paths */
	/* The parameters (spool/params.h): each by its name (j->width),
	 * or all together (j->params) for the table-driven code. */
	union {
		struct job_params params;
		struct {
			JOB_PARAMS_MEMBERS
		};
	};
	char *output_dir, *output_name;	/* NULL: the defaults */
	struct job_callback callback;	/* url NULL: none */
	json_t *metadata;	/* NULL when absent */
	int line[JF_COUNT_];	/* 0 when the field was not given */
};

/* A job with every value from the configuration's defaults. */
void job_init(struct sd_job *j, const struct sd_config *c);
void job_free(struct sd_job *j);

/* Parse and validate a job document (buf, len).  name is the file for
 * messages; dir the folder relative paths are resolved against; id the job
 * id (validated).  On error: -1, err filled (code SD_EDATA, or SD_ENOINPUT
 * for a missing input file; err->field the field), *line the line or 0. */
int job_parse(struct sd_job *j, const struct sd_config *c, const char *buf,
    size_t len, const char *name, const char *dir, const char *id,
    struct sd_error *err, int *line);

/* Resolve and check the files a parsed job names: model, unet and vae
 * (relative to dir, then the configured model folders, then the Hub cache;
 * inside the allowed model folders when the configuration has some),
 * init_image and mask (must exist).  A missing one is SD_ENOINPUT naming the
 * field and line.  The resolved paths replace the job's strings; model NULL
 * takes the configured model (error when there is none). */
int job_resolve(struct sd_job *j, const struct sd_config *c,
    struct sd_error *err, int *line);

struct hub_options;

/* job_resolve, with hooks for a model downloaded from the Hub (see
 * model_resolve_hooks; NULL: none). */
int job_resolve_hooks(struct sd_job *j, const struct sd_config *c,
    const struct hub_options *hooks, struct sd_error *err, int *line);

/* One step of job_resolve_hooks: the part (JF_MODEL, JF_UNET, JF_VAE)
 * resolved in place (the model NULL: the configured one). */
int job_resolve_model_part(struct sd_job *j, const struct sd_config *c,
    const struct hub_options *hooks, enum job_field part, struct sd_error *err,
    int *line);

/* The other step: init_image, mask and the LoRA files, relative to the
 * job's folder, must be regular files; resolved in place. */
int job_resolve_inputs(struct sd_job *j, struct sd_error *err, int *line);

/* Read and parse a job file. */
int job_load(struct sd_job *j, const struct sd_config *c, const char *path,
    const char *id, struct sd_error *err, int *line);

/* Only the callback of a job document that failed validation, so that a
 * rejected job can still be reported: 0 and cb filled when the document
 * holds a valid callback mapping, else -1. */
int job_parse_callback(const char *buf, size_t len, const struct sd_config *c,
    struct job_callback *cb);
void job_callback_free(struct job_callback *cb);

/* Validate the values (after the flags of `sdbatch run`, and again once
 * the model's defaults are in): every parameter's range and configured
 * limit (unset "model default" values pass), and the cross-field rules.
 * Returns 0 or -1 with err (err->field the field to blame). */
int job_check(const struct sd_job *j, const struct sd_config *c,
    struct sd_error *err);

/* The job's effective parameters as a JSON object (for the result record,
 * the PNG's sdbatch chunk and the callback): every entry of the parameters
 * table by its name (null for a model default not yet known), and
 * output. */
json_t *job_parameters_json(const struct sd_job *j);

/* Output file name of image index with seed: the pattern's {id}, {index}
 * and {seed} replaced; with count > 1 and no {index} in the pattern, "-N"
 * is added before the extension.  Returns a malloc'd name or NULL with err
 * (a pattern that would leave its folder). */
char *job_output_name(const char *pattern, const char *id, int index,
    uint64_t seed, int count, struct sd_error *err);

/* Check an output name pattern: no '/', no "..", not empty. */
int job_check_name_pattern(const char *pattern, struct sd_error *err);

#endif
