/* lora.h: LoRA files, and merging them into a model's weights.
 *
 * Two key formats are read: kohya / A1111 (`lora_unet_<module>`,
 * `lora_te_<module>`, `lora_te1_`/`lora_te2_` for SDXL's two encoders, each
 * with `.lora_down.weight`, `.lora_up.weight` and an optional `.alpha`; the
 * module paths are diffusers' or the original layout's with `.` written
 * `_`) and diffusers / PEFT (`unet.<module>.lora_A.weight` / `lora_B`,
 * `.lora.down` / `.lora.up`, `.lora_linear_layer.down` / `.up`, the old
 * attention processors' `to_q_lora.down`; `text_encoder.`, `text_encoder_2.`).
 * F32, F16 and BF16.  Linear layers and convolutions (1x1 and k x k).
 *
 * Each layer is mapped onto the tensor of the base model it changes, by its
 * name in the original single-file layout (the weights set's names); an
 * OpenCLIP text encoder's fused in_proj (SD 2.x, SDXL's second encoder)
 * takes a q/k/v LoRA in its rows.  The merge is diffusers' (PEFT's):
 *
 *     W' = W + sum_i m_i * (alpha_i / rank_i) * up_i @ down_i
 *
 * computed in float32 into F32 copies of the touched tensors only, which are
 * put into the weights set over the mmap'd originals (left untouched);
 * lora_merge_undo puts the originals back.  A file without `.alpha` has
 * alpha = rank (diffusers' rule). */
#ifndef SD_LORA_H
#define SD_LORA_H

#include <stddef.h>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/weights.h"

enum lora_format { LORA_KOHYA, LORA_PEFT, LORA_DIFFUSERS };

/* What a layer of the file changes. */
enum lora_part { LORA_UNET, LORA_TEXT1, LORA_TEXT2 };

struct lora_layer {
	char name[192];			/* the file's layer name (key less suffix) */
	char module[192];		/* the module path with dots */
	enum lora_part part;
	const struct sd_tensor *down;	/* [rank, in] or [rank, in, k, k] */
	const struct sd_tensor *up;	/* [out, rank] or [out, rank, 1, 1] */
	float alpha;			/* rank when the file has none */
	int has_alpha;
	int rank;
};

struct lora {
	char *path;
	struct st_file *file;
	enum lora_format format;
	int nlayers;
	struct lora_layer *layers;
	int nunet, ntext[2];		/* layers per part */
	int nconv;			/* layers with a k x k (k > 1) down */
	int min_rank, max_rank;
	float min_alpha, max_alpha;	/* over the layers that have one */
	int dtype;			/* enum sd_dtype of the first down */
};

/* Open a LoRA file and pair its keys into layers.  NULL with err naming the
 * file and the problem (not a LoRA, an unpaired or malformed key, a
 * LyCORIS / DoRA variant sdbatch does not merge). */
struct lora *lora_open(const char *path, struct sd_error *err);
void lora_free(struct lora *l);

/* "kohya", "peft", "diffusers" */
const char *lora_format_name(enum lora_format f);

/* The base a LoRA was made for, from its shapes and keys (for `info` and
 * error messages): "SD 1.x", "SD 2.x", "SDXL", or "unknown (...)" into buf;
 * returns buf. */
const char *lora_base_guess(const struct lora *l, char *buf, size_t size);

/* Where the model's parts live in a weights set: the UNet's prefix and one
 * prefix per text encoder (the original layout's). */
struct lora_model {
	const char *unet_prefix;
	const char *text_prefix[2];
	int ntext;
};

/* One LoRA of a merge and its multipliers m (the job's scale): scale for
 * the text encoders' layers, unet_scale for the UNet's (A1111's
 * <lora:NAME:TE:UNET>; the same value otherwise). */
struct lora_use {
	const struct lora *lora;
	float scale;
	float unet_scale;
};

/* What a merge did, per LoRA: layers applied and layers that matched no
 * tensor of the model (the first of them named). */
struct lora_report {
	int applied, unmatched;
	char first_unmatched[192];
};

struct lora_merge;

/* Merge n LoRAs into w (see the top of this file).  report, when not NULL,
 * gets n entries.  A LoRA none of whose layers matches the model, or one
 * whose shapes do not fit it (another architecture), is an error naming it;
 * w is then unchanged.  NULL with err. */
struct lora_merge *lora_merge_apply(struct sd_weights *w, const struct lora_model *mdl,
    const struct lora_use *uses, int n, struct lora_report *report, struct sd_error *err);
/* Put the original tensors back into w and free the merged copies. */
void lora_merge_undo(struct lora_merge *mg, struct sd_weights *w);
/* Number of tensors and bytes the merge holds. */
int lora_merge_tensors(const struct lora_merge *mg);
size_t lora_merge_bytes(const struct lora_merge *mg);

/* A1111's hash of a LoRA file: the SHA-256 of the safetensors data after
 * the header ("addnet" hash); the first 12 hex digits are what A1111 writes
 * in `Lora hashes`.  out gets 64 hex digits.  -1 with err. */
int lora_file_hash(const char *path, char out[65], struct sd_error *err);

/* Write to path a random kohya LoRA of the given rank (alpha = rank, F16,
 * deterministic values) over the layers a LoRA usually changes in the
 * model of w: every linear layer of the UNet's transformers (proj_in and
 * proj_out, attention q/k/v/out, feed-forward) and of the text encoders
 * (attention q/k/v/out, MLP), found by their original single-file names.
 * For benchmarks and tests (`sdbatch bench --lora-rank N`).  *nlayers
 * (when not NULL) gets the count.  -1 with err. */
int lora_make_random(const struct sd_weights *w, const struct lora_model *mdl, int rank,
    const char *path, int *nlayers, struct sd_error *err);

/* The file of a prompt's <lora:NAME>: DIR/NAME.safetensors, else DIR/NAME
 * (a regular file), in the first of the ndirs folders that has it, into
 * out.  NAME may not hold '/' or '\\' nor start with '.', and what is found
 * must lie inside its folder with symbolic links resolved: a link out of it
 * gets one error whether its target exists or not.  0, or -1 with err
 * (SD_EDATA: a bad name, a link out; SD_ENOINPUT: no folder has it, naming
 * where it looked). */
int lora_find(const char *const *dirs, int ndirs, const char *name, char *out, size_t size,
    struct sd_error *err);

#endif
