/* hub.h: models named by Hugging Face Hub id ("org/name[@revision]").
 *
 * The Hub cache is read and written exactly as huggingface_hub does, so that
 * both share one cache:
 *   CACHE/models--ORG--NAME/blobs/ETAG          the files (ETAG: the git
 *                                               SHA-1, or for LFS files the
 *                                               SHA-256 of the content)
 *   CACHE/models--ORG--NAME/blobs/ETAG.incomplete   a partial download
 *   CACHE/models--ORG--NAME/refs/REVISION       the commit of a branch or tag
 *                                               (40 hex digits, no newline)
 *   CACHE/models--ORG--NAME/snapshots/COMMIT/PATH   relative symbolic links
 *                                               to ../../blobs/ETAG (one more
 *                                               ../ per sub-folder); real files
 *                                               where links are not supported
 *   CACHE/models--ORG--NAME/.no_exist/COMMIT/PATH   known missing files
 *   CACHE/.locks/models--ORG--NAME/ETAG.lock    flock(2) guarding each blob
 * CACHE is $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub,
 * with HF_HOME defaulting to ${XDG_CACHE_HOME:-$HOME/.cache}/huggingface.
 *
 * Downloads: {$HF_ENDPOINT or https://huggingface.co}/ID/resolve/REV/FILE,
 * a HEAD that follows only relative redirects (X-Repo-Commit, the etag, the
 * size, and for LFS files a Location to GET), then a GET into
 * ETAG.incomplete, resumed with a Range request after a dropped connection
 * or a killed process, checked (size; SHA-256 for LFS files) and renamed
 * into place.  The token ($HF_TOKEN, else $HUGGING_FACE_HUB_TOKEN, else the
 * file $HF_TOKEN_PATH or $HF_HOME/token) goes in "Authorization: Bearer" to
 * the endpoint's host only, and never into a message.  $HF_HUB_OFFLINE=1
 * (or the offline option) never touches the network. */
#ifndef SD_MODEL_HUB_H
#define SD_MODEL_HUB_H

#include <signal.h>
#include <stddef.h>

#include "core/error.h"

#define HUB_DEFAULT_ENDPOINT "https://huggingface.co"

/* What a download is doing, for a progress display. */
struct hub_progress {
	const char *repo;	/* "org/name" */
	const char *file;	/* the path in the repo */
	int index, count;	/* this is file index (1-based) of count, when known (else 0) */
	long long done;		/* bytes of the file on disk so far */
	long long total;	/* its size, or -1 */
	int state;		/* HUB_FILE_* */
};

enum {
	HUB_FILE_PROGRESS,	/* bytes are arriving */
	HUB_FILE_DONE,		/* downloaded and checked */
	HUB_FILE_CACHED,	/* already in the cache */
	HUB_FILE_ABSENT,	/* an optional file the repo does not have */
};

struct hub_options {
	const char *cache;	/* the cache folder; NULL: from the environment */
	const char *endpoint;	/* NULL: $HF_ENDPOINT, else HUB_DEFAULT_ENDPOINT */
	const char *token;	/* NULL: from the environment or the token file; "": none */
	int offline;		/* never use the network ($HF_HUB_OFFLINE=1 too) */
	int download;		/* hub_resolve_model may fetch what the cache lacks */
	int prefer_fp16;	/* fetch the .fp16 variant of weights where there is one */
	int no_symlinks;	/* real files in snapshots/ (as where symlink(2) fails) */
	long timeout_s;		/* connect timeout and stall timeout (0: 30 s and 60 s) */
	int retries;		/* resumptions of one file after a dropped connection */
	/* Called as files are looked at and downloaded (may be NULL). */
	void (*progress)(void *user, const struct hub_progress *p);
	/* Called with a message worth showing (waiting for a lock, resuming,
	 * using the cache because the Hub is unreachable); may be NULL. */
	void (*notice)(void *user, const char *message);
	void *user;
	/* When not NULL and set, a download stops, and so does a pull
	 * before its next file (SD_EREQUEUED). */
	const volatile sig_atomic_t *stop;
};

/* A parsed Hub id: "ORG/NAME", "ORG/NAME@REVISION", and either followed by
 * "/PATH" for one file of the repo ("ORG/NAME@REV/unet/x.safetensors";
 * a revision holding '/' is written with %2F there). */
struct hub_id {
	char repo[128];		/* "org/name" */
	char revision[256];	/* "main" when not given */
	char path[1024];	/* a file in the repo, or "" */
};

/* Defaults: no download, nothing else set (the environment is read when
 * the options are used). */
void hub_options_init(struct hub_options *o);

/* Parse name as a Hub id (the repo names the Hub accepts: letters, digits,
 * '-', '_', '.', no "--" or ".."; at most 96 characters).  Returns 0, or -1
 * when name is not one. */
int hub_parse_id(const char *name, struct hub_id *id);

/* Does name look like a Hub id (hub_parse_id succeeds)? */
int hub_is_id(const char *name);

/* The cache folder (o->cache, else the environment, see above) into buf;
 * returns buf ("" when neither $HOME nor any variable is set). */
const char *hub_cache_dir(const struct hub_options *o, char *buf, size_t size);

/* The folder of a repo in the cache: CACHE/models--ORG--NAME. */
int hub_repo_dir(const struct hub_options *o, const char *repo, char *out,
    size_t size);

/* One file of a repo, as huggingface_hub's hf_hub_download: its snapshot
 * path into out.  A revision that is a commit already in the cache needs
 * no network; otherwise a HEAD asks for the current commit and etag.
 * Offline, or when the Hub cannot be reached, the cache answers.  Returns 0,
 * or 1 when optional is set and the repo has no such file (a .no_exist
 * marker is written), or -1 with err. */
int hub_download(const struct hub_options *o, const struct hub_id *id,
    const char *file, int optional, char *out, size_t size,
    struct sd_error *err);

/* Fetch into the cache what rendering needs from a repo, or the files
 * given (n_files > 0): the snapshot folder (or, for a repo that is one
 * diffusers part such as a VAE, or for an id naming a file, that file)
 * into out.  A repo with neither model_index.json nor diffusers weights but
 * vocab.json and merges.txt at its top is a tokenizer: those files (and
 * special_tokens_map.json, tokenizer_config.json), the snapshot folder.  What rendering needs: model_index.json, and for each part it
 * lists, its config, its weights in safetensors (the fp16 variant first
 * when o->prefer_fp16, else the full one first), the tokenizer files and
 * the scheduler config.  All files come from one commit. */
int hub_pull(const struct hub_options *o, const char *name,
    const char *const *files, size_t n_files, char *out, size_t size,
    struct sd_error *err);

/* The local path of a Hub id from the cache alone (no network): the
 * snapshot folder when it holds what rendering needs (or a tokenizer), the
 * weights of a one-part repo, the file for an id naming one.  -1 with err (SD_ENOINPUT) saying what is missing. */
int hub_cached(const struct hub_options *o, const char *name, char *out,
    size_t size, struct sd_error *err);

/* A model name as a job or the configuration gives it: a path that exists
 * is returned as it is; a Hub id is looked up in the cache, and when it is
 * not there (or incomplete) and o->download is set and not offline,
 * downloaded (hub_pull).  Errors: SD_ENOINPUT for an unknown name or a
 * model missing from the cache (saying how to get it), and those of
 * hub_pull. */
int hub_resolve_model(const char *name, const struct hub_options *o,
    char *out, size_t size, struct sd_error *err);

/* Is the value of an environment variable such as HF_HUB_OFFLINE true
 * ("1", "on", "yes", "true", any case)? */
int hub_env_true(const char *name);

#endif
