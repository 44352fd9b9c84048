/* gallery.h: the gallery page of a spool (sdbatch serve's GET /, and
 * `sdbatch gallery SPOOL -o DIR`), and the confined reading of the images.
 *
 * One HTML page, its CSS inline, no external fetches: the recent images
 * newest first (a card each: the picture, prompt, negative prompt, seed,
 * sampler, steps, size and model, a link to the full PNG and the command
 * line that renders it again), the jobs in progress and the failed jobs
 * with their error.  Served live, a little JavaScript follows the progress
 * of running jobs over their event streams and offers a Redo button; the
 * static page works without JavaScript. */
#ifndef SD_WEB_GALLERY_H
#define SD_WEB_GALLERY_H

#include <stddef.h>

#include <jansson.h>

#include "core/error.h"
#include "spool/conf.h"
#include "spool/spool.h"

struct gallery_options {
	int max_images;		/* the newest this many images */
	int live;		/* served: images at /v1/jobs/ID/images/N.png,
				 * the script for progress and Redo */
};

/* The page as a malloc'd NUL-terminated string (*len its length), or NULL
 * with err. */
char *gallery_html(struct spool *s, const struct sd_config *cfg,
    const struct gallery_options *o, size_t *len, struct sd_error *err);

/* Write the static gallery into dir (created when missing): index.html
 * and images/ID-N.png (hard links to the spool's PNGs where the file system
 * allows, else copies).  *nimages (when not NULL) gets the number of
 * images.  Returns 0 or -1 with err. */
int gallery_write(struct spool *s, const struct sd_config *cfg,
    const char *dir, int max_images, int *nimages, struct sd_error *err);

/* Open an image that a result record names, read-only, only when it lies
 * inside the output root (cfg's, else SPOOL/output): the path is walked
 * down from the root one component at a time without following any
 * symbolic link, and must end at a regular file.  Returns the descriptor
 * (*size its size) or -1 with err (SD_ENOINPUT: gone; SD_EDATA: outside
 * the root, a link, not a regular file). */
int gallery_open_image(struct spool *s, const struct sd_config *cfg,
    const char *path, long long *size, struct sd_error *err);

/* A thumbnail of the open PNG fd (from gallery_open_image): at most size
 * pixels on its longer side (Lanczos), as PNG bytes in *png (malloc'd, *len
 * bytes).  Returns 0 or -1 with err. */
int gallery_thumbnail(int fd, int size, unsigned char **png, size_t *len,
    struct sd_error *err);

/* Read the result record of a finished job (done/ID.json or
 * failed/ID.json, not following symbolic links), or NULL. */
json_t *gallery_read_record(struct spool *s, const char *id);

#endif
