/* weights.h: a model's tensors by name.
 *
 * Every tensor is known by its name in the original single-file layout
 * (e.g. "model.diffusion_model.input_blocks.1.0.in_layers.0.weight"); the
 * diffusers-folder loader maps its names to those.  The tensors stay in the
 * mmap'd files: a weights set only points at them. */
#ifndef SD_WEIGHTS_H
#define SD_WEIGHTS_H

#include "core/error.h"
#include "core/tensor.h"
#include "io/safetensors.h"

struct sd_weights;

struct sd_weights *weights_new(void);
/* Also closes the files handed over with weights_own_file. */
void weights_free(struct sd_weights *w);
/* Add (or replace) a tensor under name; t must outlive w. */
int weights_put(struct sd_weights *w, const char *name, const struct sd_tensor *t);
/* Add every tensor of f whose name starts with prefix (all when prefix is
 * NULL or ""), under its own name. */
int weights_add_file(struct sd_weights *w, const struct st_file *f, const char *prefix);
/* w closes f in weights_free. */
void weights_own_file(struct sd_weights *w, struct st_file *f);

/* The tensor of that name, or NULL. */
const struct sd_tensor *weights_get(const struct sd_weights *w, const char *name);
int weights_count(const struct sd_weights *w);

/* For loaders: the tensor "<prefix><name>" with the given shape (dims of -1
 * match anything; ndim 0 skips the check), or NULL with err naming the
 * tensor and what was expected. */
const struct sd_tensor *weights_need(const struct sd_weights *w, struct sd_error *err,
    const char *prefix, const char *name, int ndim, const int64_t *shape);

#endif
