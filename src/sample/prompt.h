/* prompt.h: AUTOMATIC1111's prompt syntax (job field prompt_syntax: a1111).
 *
 *   (word)  x1.1      [word]  /1.1      (word:1.3)  x1.3      nesting multiplies
 *   \( \) \[ \] \\    literal characters
 *   BREAK             (upper case, a whole word) ends the current 75-token chunk
 *   <lora:NAME:SCALE> a LoRA for the job (taken out of the text)
 *
 * as A1111's modules/prompt_parser.py parse_prompt_attention and
 * sd_hijack_clip.py tokenize_line do it: every piece is tokenized on its own,
 * the tokens are packed into chunks of 75 (a full chunk moves the tokens
 * after its last comma, if at most 20 back, to the next chunk), and each
 * chunk is [BOS] + 75 tokens (EOS-padded) + [EOS] with one weight per token.
 * The conditioner encodes the chunks one by one, multiplies each token's
 * hidden state by its weight and restores the chunk's mean (A1111's
 * "Original" emphasis), and joins them along the token axis. */
#ifndef SD_PROMPT_H
#define SD_PROMPT_H

#include <stdint.h>

#include "core/error.h"

struct sd_tokenizer;

/* One piece of parsed text and its weight (a python float in A1111).  A
 * BREAK is the piece "BREAK" with weight exactly -1. */
struct prompt_piece {
	char *text;
	double weight;
};

/* A1111's parse_prompt_attention: text into *n pieces (malloc'd; free
 * with prompt_pieces_free); adjacent pieces of equal weight are merged, an
 * empty text is one piece ("", 1).  -1 with err (out of memory, a weight
 * that is not a number). */
int prompt_parse(const char *text, struct prompt_piece **pieces, int *n, struct sd_error *err);
void prompt_pieces_free(struct prompt_piece *pieces, int n);

/* A LoRA named in a prompt: <lora:NAME>, <lora:NAME:M>, <lora:NAME:M:U>
 * (M the text encoder's multiplier, U the UNet's, default M; also te=M,
 * unet=U); <lyco:...> likewise. */
struct prompt_lora {
	char name[256];
	float text_scale, unet_scale;
};

/* Take every <lora:...> / <lyco:...> tag out of text: *stripped gets the
 * rest (malloc'd), *loras the tags (malloc'd, *n of them; NULL when none).
 * Another extra network (<hypernet:...>) or a malformed tag is an error
 * naming it. */
int prompt_extract_loras(const char *text, char **stripped, struct prompt_lora **loras, int *n,
    struct sd_error *err);

#define PROMPT_CHUNK 75		/* tokens of a chunk, less BOS and EOS */
#define PROMPT_CHUNK_LEN 77

/* A prompt's chunks: ids and weights, [n, 77] each. */
struct prompt_chunks {
	int n;
	int32_t *ids;
	float *weights;
	int token_count;	/* A1111's count (75 per full chunk) */
	int comma_moved;	/* the comma look-back moved tokens */
};

/* Parse and tokenize text with t into chunks (see above).  -1 with err. */
int prompt_chunks(const struct sd_tokenizer *t, const char *text, struct prompt_chunks *out,
    struct sd_error *err);
void prompt_chunks_free(struct prompt_chunks *c);

/* A1111's "Original" emphasis on one chunk z [77, width] (in place): z *=
 * weight of its token, then z *= mean(z before) / mean(z after), the means
 * over all 77*width values. */
void prompt_emphasis(float *z, const float *weights, int len, int width);

#endif
