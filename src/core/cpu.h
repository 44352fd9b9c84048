/* cpu.h: what the CPU backend tells beyond ops.h. */
#ifndef SD_CPU_H
#define SD_CPU_H

#include "core/ops.h"

/* Floating-point operations (multiply-adds count 2) of the GEMM-shaped ops
 * (conv2d, linear, attention) the context ran so far; 0 for a context that
 * is not on the CPU backend. */
double sd_cpu_flops(const struct sd_ctx *c);

#endif
