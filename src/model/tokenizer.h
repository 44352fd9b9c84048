/* tokenizer.h: the CLIP byte-level BPE tokenizer.
 *
 * Gives exactly the ids of transformers' slow CLIPTokenizer (without ftfy,
 * i.e. with its BasicTokenizer clean-up) as StableDiffusionPipeline calls it:
 * padding to 77 with the pad token, truncation to 75 tokens + EOS.  The
 * vocabulary comes from a folder with vocab.json and merges.txt (a diffusers
 * model's tokenizer/ folder, or a Hub snapshot of openai/clip-vit-large-patch14).
 *
 * A loaded tokenizer is read-only: tokenizer_encode may run on several
 * threads at once. */
#ifndef SD_TOKENIZER_H
#define SD_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

/* The sequence length of SD's text encoders. */
#define TOKENIZER_MAX_LENGTH 77

struct sd_tokenizer;

/* Load dir/vocab.json and dir/merges.txt (and the pad token from
 * dir/special_tokens_map.json or dir/tokenizer_config.json when present;
 * otherwise the pad token is <|endoftext|>).  Errors name the file and what
 * is wrong with it: SD_ENOINPUT when a file is missing, SD_EDATA when it is
 * malformed. */
struct sd_tokenizer *tokenizer_load(const char *dir, struct sd_error *err);
void tokenizer_free(struct sd_tokenizer *t);

/* Tokenize utf8 into ids: BOS, at most 75 tokens, EOS, then the pad id up to
 * 77.  *n_untruncated (when not NULL) gets the length the sequence would have
 * without truncation, BOS and EOS included.  Invalid UTF-8 is an SD_EDATA
 * error.  NULL is the empty prompt. */
int tokenizer_encode(const struct sd_tokenizer *t, const char *utf8,
    int32_t ids[TOKENIZER_MAX_LENGTH], int *n_untruncated, struct sd_error *err);

/* All the token ids of utf8, without BOS/EOS and without truncation (for
 * long-prompt chunking): a malloc'd array of *n ids that the caller frees
 * (non-NULL also when *n is 0), or NULL on error. */
int32_t *tokenizer_tokenize(const struct sd_tokenizer *t, const char *utf8,
    size_t *n, struct sd_error *err);

/* Pad with token (a vocabulary entry: "<|endoftext|>" for SD 1.x, "!" for
 * SD 2.x's and SDXL's OpenCLIP encoders) whatever the folder's files say.
 * A pad token other than <|startoftext|> and <|endoftext|> is also split off
 * the prompt wherever it appears, as transformers does with the special
 * tokens (SD 2.x: "hello world!" ends in id 0).  Call it before the
 * tokenizer is shared between threads. */
int tokenizer_set_pad(struct sd_tokenizer *t, const char *token, struct sd_error *err);

/* The ids of <|startoftext|>, <|endoftext|> and the pad token. */
int32_t tokenizer_bos(const struct sd_tokenizer *t);
int32_t tokenizer_eos(const struct sd_tokenizer *t);
int32_t tokenizer_pad(const struct sd_tokenizer *t);
/* The largest id in vocab.json (a text encoder checks its embedding covers it). */
int32_t tokenizer_max_id(const struct sd_tokenizer *t);

/* Find the tokenizer folder for a model, the first of:
 *   configured_dir, when not NULL or "" (it must hold the files);
 *   $SDBATCH_TOKENIZER, when set and not empty (it must hold the files);
 *   model_path/tokenizer, when model_path is a folder (diffusers layout);
 *   a tokenizer/ folder beside model_path, when it is a file;
 *   the Hugging Face Hub cache snapshot of openai/clip-vit-large-patch14
 *   ($HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub, else
 *   ${XDG_CACHE_HOME:-$HOME/.cache}/huggingface/hub; the commit of refs/main,
 *   else any complete snapshot);
 *   PKGDATADIR/clip-tokenizer (what `make install` installs when configured
 *   --with-tokenizer=DIR).
 * A folder counts only when it holds both vocab.json and merges.txt.
 * model_path may be NULL.  Writes the folder to out.  Nothing found:
 * SD_ENOINPUT with a message that lists every place looked at and names
 * the `sdbatch pull` command that fetches one. */
int tokenizer_find(const char *model_path, const char *configured_dir,
    char *out, size_t outsize, struct sd_error *err);

/* tokenizer_find, looking in the Hub cache folder hub_cache (the
 * configuration's hub.cache) instead of the one the environment names;
 * NULL or "": the environment's. */
int tokenizer_find_in(const char *model_path, const char *configured_dir,
    const char *hub_cache, char *out, size_t outsize, struct sd_error *err);

#endif
