/* cpu.h: what the CPU backend tells beyond ops.h. */
#ifndef SD_CPU_H
#define SD_CPU_H

#include <stddef.h>

#include "core/ops.h"

/* Drop from this process's memory the pages of the mmap'd weights the
 * context has used since the last call (only read-only file mappings: the
 * data stay in the page cache, and come back on their next use at the cost
 * of a page-cache lookup).  Call between phases (after the text encoder,
 * after sampling) to keep the peak resident memory to one model part.
 * Returns the bytes released (0 for a context not on the CPU backend). */
size_t sd_cpu_release_weights(struct sd_ctx *c);

#endif
