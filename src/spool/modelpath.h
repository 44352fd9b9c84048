/* modelpath.h: from what a job or the configuration says ("model: ...") to
 * a file or folder on disk.
 *
 * In order: an absolute path; a path relative to the job file's folder; a
 * path relative to each configured model folder; a Hugging Face Hub id
 * ("org/name") found in the local Hub cache ($HF_HUB_CACHE, else
 * $HF_HOME/hub, else ${XDG_CACHE_HOME:-~/.cache}/huggingface/hub, snapshot of
 * refs/main).  When the configuration lists model folders, the result must
 * lie inside one of them (after resolving symbolic links). */
#ifndef SD_SPOOL_MODELPATH_H
#define SD_SPOOL_MODELPATH_H

#include "core/error.h"
#include "spool/conf.h"

/* Resolve given; *out gets a malloc'd canonical path.  what names the field
 * in messages ("model", "unet", "vae").  Errors: SD_ENOINPUT listing every
 * place looked at; SD_EDATA for a path outside the allowed folders. */
int model_resolve(const char *given, const char *base_dir,
    const struct sd_config *c, const char *what, char **out,
    struct sd_error *err);

struct hub_options;

/* model_resolve, and for a Hub id the hooks of hooks (its progress, notice,
 * user and stop; NULL: none) while a download runs.  A download stopped by
 * *hooks->stop fails with SD_EREQUEUED. */
int model_resolve_hooks(const char *given, const char *base_dir,
    const struct sd_config *c, const struct hub_options *hooks,
    const char *what, char **out, struct sd_error *err);

/* The Hub cache folder (see above) into buf; returns buf. */
const char *model_hub_cache(char *buf, size_t size);

/* Is path (canonical) inside folder dir (resolved here)? */
int model_path_inside(const char *path, const char *dir);

#endif
