/* runjob.h: run one job: resolve its files, load (or reuse) the model,
 * render every image through the engine (src/sample/pipeline.h), write
 * the PNGs atomically, report progress.  Shared by `sdbatch run` and the
 * spool worker; the caller writes the result record and sends callbacks. */
#ifndef SD_SPOOL_RUNJOB_H
#define SD_SPOOL_RUNJOB_H

#include <signal.h>
#include <stdint.h>

#include "core/error.h"
#include "sample/pipeline.h"
#include "spool/conf.h"
#include "spool/job.h"
#include "spool/progress.h"
#include "spool/spool.h"

struct hub_progress;	/* model/hub.h */

/* A loaded model, kept while consecutive jobs use the same files. */
struct model_cache {
	struct sd_model *model;
	char *key;		/* model|unet|vae|tokenizer|device|threads|hub cache */
	char *arch;
};

void model_cache_free(struct model_cache *mc);

struct runjob_env {
	const struct sd_config *cfg;	/* command-line overrides applied */
	struct model_cache *cache;
	struct progress_sink *sink;
	const volatile sig_atomic_t *stop;	/* a signal: stop and requeue */
	const struct spool_claim *claim;	/* in a spool: cancel requests */
	/* Outputs: with output_path (run -o PATH) the PNGs go there; else
	 * into output_root/<output.dir or default_dir>, which may not leave
	 * output_root (NULL root: no restriction, relative to the current
	 * folder). */
	const char *output_path;
	int output_stdout;	/* or the PNG to standard output (one image) */
	const char *output_root;
	const char *default_dir;	/* NULL: the root itself */
	const char *default_name;	/* NULL: "{id}.png" */
	/* Called with each PNG's path once it is in place (or NULL). */
	void (*on_image)(void *user, const char *path);
	void *on_image_user;
	/* Called with a message worth a line on a terminal ("JOB: downloading
	 * org/name/unet/... (3.4 GB)" as a model named by Hub id is fetched
	 * on first use), or NULL. */
	void (*notice)(void *user, const char *message);
	void *notice_user;
	/* Called as each file of a model named by Hub id downloads on first
	 * use (a byte-count display), or NULL: with p->state
	 * HUB_FILE_PROGRESS as bytes arrive (from the file's start, then at
	 * most about ten times a second) and HUB_FILE_DONE once it is in
	 * place; job is the job's id.  When set, notice is not called for
	 * each file that starts downloading (the display shows it); the
	 * "loading" events are emitted either way. */
	void (*download)(void *user, const char *job,
	    const struct hub_progress *p);
	void *download_user;
};

enum runjob_status {
	RUNJOB_DONE, RUNJOB_FAILED, RUNJOB_CANCELLED, RUNJOB_INTERRUPTED
};

struct runjob_image {
	char *path;
	uint64_t seed;
	int width, height;
	char sha256[65];
};

struct runjob_result {
	enum runjob_status status;
	struct sd_error err;	/* when failed */
	int err_line;		/* line of the field to blame, or 0 */
	struct runjob_image *images;
	int nimages;
	int seed_was_random;
	double load_s, encode_s, sample_s, decode_s, total_s;
	int steps_done;
	char *model_path, *arch;
	double started, finished;	/* epoch seconds */
	char **warnings;	/* what the engine warned of (the first image's) */
	int nwarnings;
};

/* Run job (parsed; its files are resolved here).  Always fills res;
 * returns 0 when every image was written, else -1 (res->status says
 * why). */
int runjob_run(struct runjob_env *env, struct sd_job *job,
    struct runjob_result *res);
void runjob_result_free(struct runjob_result *res);

/* Can job (parsed) ever run?  The checks a worker makes before it renders,
 * with its messages, made without loading weights or downloading (for
 * `sdbatch submit` and `sdbatch serve`): the trust policy on the files
 * and callback the job names; its model, unet and vae found (a Hub id
 * missing from the cache passes when the configuration lets workers
 * download); init_image, mask and LoRA files present; the model's
 * description readable, and its defaults (size, steps) for what the job
 * leaves to it within the configured limits; an inpainting model given a
 * mask.  The job's paths are resolved in place.  0, or -1 with err
 * (err->field the field; *line its line, or 0). */
int runjob_check(const struct sd_config *cfg, struct sd_job *job,
    struct sd_error *err, int *line);

/* The status as the result record writes it ("done", "failed",
 * "cancelled", "interrupted"). */
const char *runjob_status_name(enum runjob_status st);

#endif
