/* cpu_attention.h: fused attention for the CPU backend.
 *
 * One call computes softmax(q.k * scale) . v for a range of queries of one
 * (batch, head), with the score matrix never leaving the cache: queries in
 * blocks of 32 along the vector lanes, keys in blocks with an online
 * softmax, no BLAS.  AVX-512 only (cpu_attention_fused_ok); the caller
 * keeps its own path for other CPUs. */
#ifndef SD_CPU_ATTENTION_H
#define SD_CPU_ATTENTION_H

#include <stddef.h>

/* Queries per block: cpu_attention_fused is fastest on runs of whole
 * blocks. */
#define CPU_ATTENTION_QUERIES 32

/* Nonzero when cpu_attention_fused runs on this CPU for head dim dh. */
int cpu_attention_fused_ok(int dh);
/* Floats of scratch that cpu_attention_fused needs for lk keys. */
size_t cpu_attention_scratch(int lk, int dh);
/* out rows [q0, q0 + nq) (ldo floats apart) = attention of the query rows
 * q0.. of q (ldq apart) over the lk rows of k and v (ldk, ldv apart), all
 * pointing at the head's first column; causal masks key j > query i.
 * scratch: cpu_attention_scratch(lk, dh) floats, 64-byte aligned.  The
 * blocks of queries are done from block first (modulo their count) on,
 * so that tasks of other heads running at once can write other rows of
 * out (other cache lines); the result does not depend on it. */
void cpu_attention_fused(float *scratch, float *out, int ldo, const float *q, int ldq,
    const float *k, int ldk, const float *v, int ldv, int q0, int nq, int lk, int dh,
    float scale, int causal, int first);

#endif
