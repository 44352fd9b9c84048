/* params.h: the one table of job parameters (in the manner of tmux's
 * options table).
 *
 * Each parameter of a job (prompt, width, steps, sampler, strength, ...)
 * is one entry: its name (the job file's key, the key of the result
 * record's and the PNG sdbatch chunk's "parameters", and the
 * configuration's defaults.NAME when it may be configured), its type and
 * range, the configured limit that caps it, its built-in default, its
 * `sdbatch run` flag with the --help line, where it goes in struct
 * sd_params, and its name in the PNG "parameters" text (A1111's).  Job
 * parsing, run's flags and --help, the configuration's defaults:,
 * validation, the PNG metadata, the result record and the engine's
 * parameters are all driven from the table (params.c): adding a parameter
 * is adding an entry (and its member in struct job_params).
 *
 * Parameters whose default depends on the model (width, height, steps,
 * guidance_scale, sampler, prediction, spacing, shift) are "unset" by default,
 * with the markers of struct sd_params (0 size and steps, negative
 * guidance, the *_AUTO enums); sd_params_resolve replaces them by the
 * loaded model's defaults, and params_from_sd brings those back so that
 * the records carry the effective values.  In a job file, a flag or the
 * configuration, "auto" asks for the model's default explicitly. */
#ifndef SD_SPOOL_PARAMS_H
#define SD_SPOOL_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/error.h"
#include "sample/pipeline.h"
#include "spool/yamltree.h"

/* The fields of a job file, for their line numbers: the parameters of the
 * table, then output, callback and metadata. */
enum job_field {
	JF_PROMPT, JF_NEGATIVE_PROMPT, JF_MODEL, JF_UNET, JF_VAE, JF_WIDTH,
	JF_HEIGHT, JF_STEPS, JF_GUIDANCE_SCALE, JF_SAMPLER, JF_SCHEDULE,
	JF_PREDICTION, JF_SPACING, JF_SHIFT, JF_T5,
	JF_SEED, JF_COUNT, JF_RNG, JF_CLIP_SKIP, JF_INIT_IMAGE, JF_STRENGTH,
	JF_MASK, JF_LORAS, JF_PROMPT_SYNTAX, JF_OUTPUT, JF_CALLBACK, JF_METADATA,
	JF_COUNT_
};

/* The values of a job's parameters.  struct sd_job holds these members
 * under the same names (see job.h); the configuration's defaults are one
 * struct job_params.  Strings are malloc'd (NULL: not given). */
#define JOB_PARAMS_MEMBERS \
	char *prompt; \
	char *negative_prompt;		/* "" when none */ \
	char *model, *unet, *vae;	/* as given (NULL: the configured model) */ \
	int width, height, steps;	/* 0: the model's */ \
	double guidance_scale;		/* < 0: the model's */ \
	enum sd_sampler sampler;	/* SD_SAMPLER_AUTO: the model's */ \
	enum sd_schedule schedule; \
	enum sd_prediction prediction;	/* AUTO: the model's */ \
	enum sd_spacing spacing;	/* AUTO: the model's */ \
	double shift;			/* 0: the model's (flow models) */ \
	int t5;				/* 1: with T5 (SD3), 0: without */ \
	int seed_random;		/* seed omitted or -1: chosen at run time */ \
	uint64_t seed; \
	int count; \
	enum sd_rng_kind rng; \
	int clip_skip; \
	char *init_image, *mask; \
	double strength; \
	char *loras;			/* "SCALE\tPATH\n" each (params_loras) */ \
	enum sd_prompt_syntax prompt_syntax;

struct job_params {
	JOB_PARAMS_MEMBERS
};

enum param_type {
	PARAM_TEXT,		/* a string (prompt, negative prompt) */
	PARAM_PATH,		/* a file: a string without control characters */
	PARAM_INT,
	PARAM_NUMBER,		/* a finite double */
	PARAM_CHOICE,		/* one of names (an enum) */
	PARAM_SEED,		/* 0..INT64_MAX, or -1 / null: random */
	PARAM_LORAS,		/* a list of { file: PATH, scale: X } (or "PATH",
				 * "PATH:X"); a flag adds one each time */
	PARAM_BOOL,		/* true or false (an int 1 or 0) */
};

/* Where a value sits in a struct, and as what C type. */
enum param_storage {
	PARAM_NONE,		/* not in that struct */
	PARAM_S_INT,		/* int, or an int-sized enum */
	PARAM_S_DOUBLE,
	PARAM_S_FLOAT,
	PARAM_S_U64,
	PARAM_S_STRING,		/* char * (malloc'd) or const char * */
};

/* The configured limit that caps a parameter (struct job_limits). */
enum param_limit {
	PARAM_LIMIT_NONE, PARAM_LIMIT_WIDTH, PARAM_LIMIT_HEIGHT,
	PARAM_LIMIT_STEPS, PARAM_LIMIT_COUNT, PARAM_LIMIT_PROMPT_LENGTH
};

/* flags of struct param_def */
#define PARAM_MODEL_DEFAULT	0x01	/* default: the model's ("auto") */
#define PARAM_MULTIPLE_OF_8	0x02
#define PARAM_ABOVE_MIN		0x04	/* min itself is excluded */
#define PARAM_IMG2IMG		0x08	/* only with init_image */
#define PARAM_CONFIG		0x10	/* a key of the configuration's defaults */
#define PARAM_NULL_IS_EMPTY	0x20	/* null is "" */
#define PARAM_INPUT		0x40	/* an input file (a flag's is relative to
					 * the current folder) */
#define PARAM_PNG_IF_NOT_DEFAULT 0x80	/* in the PNG text only when it is not
					 * the default (A1111's "Clip skip") */
#define PARAM_REQUIRED		0x100	/* every job gives it, not empty */

struct param_def {
	enum job_field field;
	const char *name;	/* job key, JSON key, defaults.NAME */
	enum param_type type;
	unsigned flags;
	double min, max;	/* PARAM_INT, PARAM_NUMBER */
	enum param_limit limit;	/* caps max in jobs */
	const char *default_text;	/* built in, as a job file would say
					 * it ("auto": the model's); NULL: none */
	double unset;		/* the "model default" marker
				 * (PARAM_MODEL_DEFAULT) */
	/* PARAM_CHOICE: values 0..params_choices()-1, their names ("?"
	 * past the last) */
	const char *(*choice_name)(int v);
	const char *(*choice_png)(int v);	/* the PNG text's, or NULL */
	/* storage */
	size_t offset;		/* in struct job_params */
	enum param_storage storage;
	size_t size;		/* sizeof the member (checked by the tests) */
	size_t sd_offset;	/* in struct sd_params */
	enum param_storage sd_storage;	/* PARAM_NONE: not passed there */
	size_t sd_size;
	/* `sdbatch run` */
	const char *flag;	/* long option without "--" */
	int short_flag;		/* or 0 */
	const char *flag_alias;	/* another long option, or NULL */
	/* the flag takes no argument and gives the parameter this value, as
	 * a job file would say it ("false" for --no-t5); NULL: it takes one */
	const char *flag_value;
	const char *metavar;
	const char *help;
	/* PNG "parameters" text */
	const char *png;	/* A1111's name, or NULL: not written */
	int png_rank;		/* its place in the text */
	enum job_field png_with;	/* joined to this field's value with
					 * "x" (Size: WxH); 0 (JF_PROMPT): none */
};

/* The table, in job-file order (the order of the JSON objects). */
extern const struct param_def params_table[];
extern const size_t params_count;

/* The entry of a name (a job key) or of a field; NULL when none. */
const struct param_def *params_find(const char *name);
const struct param_def *params_by_field(enum job_field f);

/* The number of values of a PARAM_CHOICE parameter (0 for others). */
int params_choices(const struct param_def *d);

/* Every value from the table's built-in defaults. */
void params_init(struct job_params *v);
/* A deep copy of src into dst (dst's strings are freed first; dst may
 * be zeroed).  0, or -1 out of memory. */
int params_copy(struct job_params *dst, const struct job_params *src);
/* Copy one parameter's value from src to dst (deep).  0 or -1. */
int params_copy_one(const struct param_def *d, struct job_params *dst,
    const struct job_params *src);
void params_free(struct job_params *v);

/* Does v give parameter d a value (not the model's default, not NULL)? */
int params_is_set(const struct param_def *d, const struct job_params *v);

struct job_limits;

/* Read parameter d from YAML node n into v.  label names the field in
 * messages ("defaults.width"; NULL: d->name); lim caps the range with the
 * configured limits (NULL: the table's range only, as the configuration's
 * defaults are read).  Errors through y (code, file, line, field). */
int params_parse_yaml(const struct param_def *d, struct yctx *y,
    const struct ynode *n, const char *label, const struct job_limits *lim,
    struct job_params *v);

/* Read parameter d from a command-line argument: text read as a plain
 * YAML scalar would be (strings verbatim), in the table's range; a path
 * of an input file is made absolute against the current folder; text
 * NULL (a flag without an argument) is d->flag_value.  0, or -1 with why
 * ("expected an integer, got \"many\""). */
int params_parse_text(const struct param_def *d, const char *text,
    struct job_params *v, char *why, size_t size);

/* Check parameter d's value in v against its range and the configured
 * limits (unset values pass).  0, or -1 with err (SD_EDATA, field set,
 * message "NAME: problem"). */
int params_check(const struct param_def *d, const struct job_params *v,
    const struct job_limits *lim, struct sd_error *err);

/* Parameter d's value as JSON: numbers, names, strings; null for a value
 * not set (the model's default not yet known, no file, strength without
 * init_image); the seed -1 when random. */
json_t *params_json(const struct param_def *d, const struct job_params *v);

/* The value as text, as a job file or a flag would give it ("512",
 * "7.5", "euler_a", "auto"), into buf.  Returns buf. */
const char *params_text(const struct param_def *d, const struct job_params *v,
    char *buf, size_t size);

/* The PNG "parameters" line after the prompts, A1111's
 * "Steps: 20, Sampler: Euler a, ..., Version: sdbatch X" (malloc'd), with
 * this image's seed and the model's display name. */
char *params_png_line(const struct job_params *v, uint64_t seed,
    const char *model_name);

/* The engine's parameters from v (strings point into v; init_rgb and
 * mask_grey are the caller's).  Unset values stay "model default". */
void params_to_sd(const struct job_params *v, struct sd_params *p);
/* After sd_params_resolve: every parameter v left unset takes p's
 * (effective) value. */
void params_from_sd(struct job_params *v, const struct sd_params *p);

/* The LoRAs of v (loras:) as the engine takes them: *out malloc'd (free
 * with params_loras_free), paths pointing into it.  0, or -1 out of
 * memory. */
int params_loras(const struct job_params *v, struct sd_lora **out, int *n);
void params_loras_free(struct sd_lora *l, int n);
/* Replace the path of LoRA i of v (a job resolving it against its
 * folder).  0, or -1 out of memory. */
int params_lora_set_path(struct job_params *v, int i, const char *path);

/* `sdbatch run`'s help lines for the parameters' flags (malloc'd). */
char *params_flags_help(void);

#endif
