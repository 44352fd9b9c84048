/* conf.h: sdbatch.yaml, the configuration file (see sdbatch.yaml(5)).
 *
 * Looked for in --config FILE, else $SDBATCH_CONFIG, else
 * SYSCONFDIR/sdbatch/sdbatch.yaml (usually /etc/sdbatch/sdbatch.yaml) when
 * present.  Command-line options override the file; job fields override
 * both. */
#ifndef SD_SPOOL_CONF_H
#define SD_SPOOL_CONF_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "model/hub.h"
#include "sample/pipeline.h"
#include "spool/params.h"
#include "spool/policy.h"
#include "spool/yamltree.h"

/* What a job may ask for at most. */
struct job_limits {
	int width, height, steps, count;
	size_t prompt_length;	/* characters (code points) */
	struct ylimits yaml;	/* document/scalar bytes, depth, nodes */
};

struct callback_config {
	int attempts;		/* total attempts, >= 1 */
	double timeout_s;	/* per attempt */
	double total_s;		/* give up after this long in all */
	double backoff_s;	/* first delay; doubles each retry, with jitter */
	double backoff_max_s;
	const struct sd_policy *policy;	/* the configuration's (never NULL) */
};

/* Models named by Hugging Face Hub id (hub: in the file). */
struct hub_config {
	char *cache;		/* the Hub cache; NULL: $HF_HUB_CACHE, $HF_HOME/hub, ... */
	char *endpoint;		/* NULL: $HF_ENDPOINT, else https://huggingface.co */
	int offline;		/* never use the network (as HF_HUB_OFFLINE=1) */
	int download;		/* fetch a model missing from the cache on first use */
	int fp16;		/* prefer the fp16 variant of the weights */
};

/* sdbatch serve (serve: in the file). */
struct serve_config {
	char *listen;		/* ADDR:PORT; NULL: 127.0.0.1:8080 */
	char *token;		/* bearer token; NULL: $SDBATCH_SERVE_TOKEN */
	char *cors_origin;	/* Access-Control-Allow-Origin; NULL: no CORS */
	int connections;	/* connections at once */
	int gallery_images;	/* images on the gallery page */
};

struct sd_config {
	char *path;		/* the file read, or NULL */
	char *model;		/* default model */
	char *tokenizer;	/* tokenizer folder, or NULL: found per model */
	char *text_encoders;	/* SD3's text encoders' folder, or NULL */
	char *device;		/* "cpu", "cuda", "cuda:N" */
	int threads;		/* 0: default */
	char *output_root;	/* NULL: SPOOL/output (watch) or . (run) */
	char **model_dirs;	/* allowed model folders (none: anywhere) */
	size_t n_model_dirs;
	char **lora_dirs;	/* where <lora:NAME> finds NAME.safetensors */
	size_t n_lora_dirs;
	double poll_s;		/* spool poll interval */
	double stale_s;		/* claim heartbeat age that makes it stale */
	double heartbeat_s;	/* how often a worker touches its claim */
	int max_deaths;		/* worker deaths before a job goes to failed/ */
	double job_time_s;	/* a job's longest run (0: no limit) */
	/* job values used when a job does not give them: the table's
	 * defaults (spool/params.h), then the file's defaults: section */
	struct job_params defaults;
	struct job_limits limits;
	struct callback_config callback;
	struct hub_config hub;
	struct sd_policy policy;	/* the `policy:` section (policy.h) */
	struct serve_config serve;
};

/* The hub options of c (strings point into c). */
void config_hub_options(const struct sd_config *c, struct hub_options *o);

/* The built-in configuration. */
void config_init(struct sd_config *c);
void config_free(struct sd_config *c);

/* Which file to read: explicit (may be NULL), else $SDBATCH_CONFIG, else
 * the system file if it exists.  Returns NULL for "no file". */
const char *config_locate(const char *explicit_path);

/* Read path into c (which config_init prepared); keys the file gives replace
 * c's values.  Errors are SD_ECONFIG and name the file, line and key. */
int config_load(struct sd_config *c, const char *path, struct sd_error *err);

/* Parse a config document from memory (tests). */
int config_parse(struct sd_config *c, const char *buf, size_t len,
    const char *name, struct sd_error *err);

/* Is device one that sdbatch knows: "cpu", "cuda" or "cuda:N" (N a GPU
 * index, 0 to 255)?  Whether it is there is learnt when it is used. */
int config_device_valid(const char *device);

/* Set c->field (a string field) to a copy of value. */
int config_set_string(char **field, const char *value);

#endif
