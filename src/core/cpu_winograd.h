/* cpu_winograd.h: the transforms of Winograd's minimal filtering
 * F(m x m, 3 x 3) for the CPU backend's 3x3, stride 1, pad 1 convolutions.
 *
 * With alpha = m + 2, a tile of m x m outputs is computed from an
 * alpha x alpha input patch as A^T [(G g G^T) . (B^T d B)] A: the
 * alpha^2 element products summed over the input channels are alpha^2
 * independent GEMMs  M[xi] (cout x tiles) = U[xi] (cout x cin) V[xi]
 * (cin x tiles),  alpha^2 / m^2 multiplications per output and channel
 * pair where the direct convolution needs 9 (2.25x fewer for m 2, 2.78x
 * for m 3, 4x for m 4).  m is 2 (alpha 4: exact in binary but for the
 * halves of G), 3 (alpha 5, the points 0, 1, -2, -1/2: about 3x the
 * error of m 2) or 4 (alpha 6, the points 0, +-1, +-2, +-1/2: about a
 * digit less accurate than m 2).
 *
 * Tiles are numbered over the whole batch: tile t of an n x cin x h x w
 * input is image t / (th * tw), tile row t / tw % th, tile column t % tw,
 * th = ceil(h / m), tw = ceil(w / m); its patch starts at (row * m - 1,
 * column * m - 1), zeros outside the image.  The transforms vectorise
 * over 16 tiles (or 16 input channels for the weights) and dispatch to
 * AVX-512, AVX2 or portable code with cpu_kernels_level().  None of them
 * threads: callers split the channels. */
#ifndef SD_CPU_WINOGRAD_H
#define SD_CPU_WINOGRAD_H

#include <stddef.h>

#include "core/tensor.h"

/* Whether m is a tile size these transforms do (2, 3 or 4). */
int wino_supported(int m);

/* Transformed weights of output channels [co0, co1):
 * U[(xi * cout + co) * cin + ci] = (G g G^T)[xi] for g = w[co, ci, 3, 3]
 * (w F32, F16 or BF16, C-contiguous [cout, cin, 3, 3]).  tmp: scratch of
 * 9 * cin floats. */
void wino_weights(float *U, const void *w, enum sd_dtype dtype, int cout, int cin,
    int co0, int co1, int m, float *tmp);

/* Transformed input patches of tiles [t0, t0 + nt), channels [ci0, ci1):
 * V[(xi * cin + ci) * ldv + j] = (B^T d B)[xi] for the patch d of tile
 * t0 + j of x[n, cin, h, w].  j runs over whole groups of 16 (the lanes
 * past nt get zeros), so ldv must be at least nt rounded up to 16. */
void wino_input(float *V, size_t ldv, const float *x, int cin, int h, int w, int m,
    long t0, int nt, int ci0, int ci1);

/* Output tiles: y[b, co, ...] = A^T M A (+ bias[co] when bias is not NULL)
 * for tiles [t0, t0 + nt) and output channels [co0, co1), M as V above
 * (M[(xi * cout + co) * ldm + j]), y [n, cout, h, w]; only the outputs
 * inside h x w are written. */
void wino_output(float *y, const float *M, size_t ldm, const float *bias, int cout, int h,
    int w, int m, long t0, int nt, int co0, int co1);

#endif
