/* spm.h: a SentencePiece unigram tokenizer that reads a spiece.model
 * (SentencePiece's ModelProto, parsed here from the protobuf wire format),
 * and T5's use of it (T5Tokenizer, as SD3's tokenizer_3 calls it).
 *
 * Encoding follows SentencePiece: normalisation by the model's
 * normalizer_spec (the precompiled character map of nmt_nfkc, or none for
 * identity; add_dummy_prefix, remove_extra_whitespaces, spaces as U+2581),
 * then the Viterbi path over the unigram lattice that maximises the sum of
 * the piece scores; a character no piece covers is <unk> (consecutive ones
 * fused into one), or its UTF-8 bytes as <0xXX> pieces when the model has
 * byte_fallback. */
#ifndef SD_SPM_H
#define SD_SPM_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

/* T5's sequence length in SD3 (the pipeline's max_sequence_length). */
#define SPM_T5_MAX_LEN 256
/* T5Tokenizer's <extra_id_0> .. <extra_id_99>. */
#define SPM_T5_EXTRA_IDS 100

struct spm_model;

/* Parse a spiece.model held in memory (n bytes; the data is copied).  NULL
 * with err (SD_EDATA) naming what is malformed: a truncated varint or
 * field, a wrong wire type, a piece without its string, an unsupported
 * model type, a bad character map. */
struct spm_model *spm_load_mem(const void *data, size_t n, struct sd_error *err);
/* The same from a file (SD_ENOINPUT when it cannot be read; the message
 * names the path). */
struct spm_model *spm_load(const char *path, struct sd_error *err);
void spm_free(struct spm_model *m);

/* The number of pieces (ids 0 .. n-1). */
int spm_size(const struct spm_model *m);
/* The string of piece id (UTF-8, U+2581 for spaces), or NULL out of range. */
const char *spm_piece(const struct spm_model *m, int id);
/* The id of a piece string (any type), or -1. */
int spm_piece_id(const struct spm_model *m, const char *piece);
/* The id of the unknown piece. */
int spm_unk_id(const struct spm_model *m);

/* SentencePiece's encode of text (UTF-8; len bytes): the ids, at most cap
 * of them stored in ids (which may be NULL when cap is 0).  Returns the
 * total number of ids (may exceed cap), or -1 with err when out of memory. */
int spm_encode(const struct spm_model *m, const char *text, size_t len, int32_t *ids,
    int cap, struct sd_error *err);

/* T5Tokenizer (slow, legacy) with padding="max_length", truncation: text is
 * split at the literal strings "</s>", "<pad>", "<unk>" and "<extra_id_0>"
 * .. "<extra_id_99>" (each its id; extra id i is size + 99 - i), the parts
 * between are encoded with spm_encode, "</s>" is appended unless the ids
 * already end with it, the pieces are truncated to max_len - 1 first, and
 * the rest is padded with "<pad>" up to max_len.  ids gets exactly max_len
 * ids.  Returns the length before truncation and padding (with the "</s>"),
 * or -1 with err (a model without "</s>"/"<pad>", max_len < 1, out of
 * memory). */
int spm_t5_encode(const struct spm_model *m, const char *text, int32_t *ids, int max_len,
    struct sd_error *err);

#endif
