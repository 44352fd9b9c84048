/* metadata.h: what sdbatch writes into each PNG (see SPEC.md "PNG").
 *
 * A `parameters` text chunk in the form A1111, sd.cpp and image tools read:
 *
 *   <prompt>
 *   Negative prompt: <negative prompt>
 *   Steps: 20, Sampler: Euler a, Schedule type: Karras, CFG scale: 7.5,
 *   Seed: 42, Size: 512x512, Model: <name>, RNG: CPU, Version: sdbatch 0.1.0
 *
 * (the last line is one line; "Negative prompt" only when there is one;
 * "Denoising strength" for img2img and "Clip skip" above 1 as A1111 writes
 * them), and an `sdbatch` chunk with the effective parameters as JSON.
 * Both come from the parameters table (spool/params.h): its A1111 names
 * and order, and job_parameters_json. */
#ifndef SD_SPOOL_METADATA_H
#define SD_SPOOL_METADATA_H

#include <stdint.h>

#include "spool/job.h"

/* The model's display name: the file (or folder) name without extension. */
void metadata_model_name(const char *model_path, char *out, size_t size);

/* The `parameters` text of the image with this seed (malloc'd). */
char *metadata_parameters(const struct sd_job *j, uint64_t seed,
    const char *model_name);

/* The `sdbatch` chunk: the job's parameters, this image's index and seed,
 * the model's arch and the sdbatch version, as compact JSON (malloc'd). */
char *metadata_sdbatch_json(const struct sd_job *j, int index, uint64_t seed,
    const char *arch);

#endif
