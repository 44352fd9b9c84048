/* test_hub.c: the Hugging Face Hub cache and downloads, against fakehub.
 *
 * A cache laid out by hand exactly as huggingface_hub lays it out is read;
 * what hub.c writes is checked file by file against that layout (refs,
 * blob names, relative symbolic links, .no_exist markers); downloads run
 * against tests/fakehub on 127.0.0.1: redirects to a second path for LFS
 * files, Range requests, a gated repo, missing files and revisions, a
 * server that drops the connection halfway, a download killed with
 * SIGKILL and resumed, a corrupt partial file, HF_HUB_OFFLINE. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "model/hub.h"
#include "tap.h"

static char tmp[PATH_MAX];
static char fakehub_bin[PATH_MAX];

/* ------------------------------------------------------------ helpers */

static void
pf(char *out, size_t size, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(out, size, fmt, ap);
	va_end(ap);
}

static void
mkdirs(const char *path)
{
	char buf[PATH_MAX], *p;

	snprintf(buf, sizeof buf, "%s", path);
	for (p = buf + 1; *p; p++)
		if (*p == '/') {
			*p = '\0';
			mkdir(buf, 0755);
			*p = '/';
		}
	mkdir(buf, 0755);
}

static void
write_bytes(const char *path, const void *data, size_t n)
{
	char dir[PATH_MAX], *slash;
	FILE *f;

	snprintf(dir, sizeof dir, "%s", path);
	if ((slash = strrchr(dir, '/')) != NULL) {
		*slash = '\0';
		mkdirs(dir);
	}
	if ((f = fopen(path, "wb")) == NULL || fwrite(data, 1, n, f) != n) {
		tap_diag("cannot write %s: %s", path, strerror(errno));
		exit(1);
	}
	fclose(f);
}

static void
write_text(const char *path, const char *text)
{
	write_bytes(path, text, strlen(text));
}

/* n pseudo-random bytes from seed (malloc'd). */
static unsigned char *
noise(size_t n, uint32_t seed)
{
	unsigned char *b = malloc(n);

	for (size_t i = 0; i < n; i++) {
		seed = seed * 1664525u + 1013904223u;
		b[i] = (unsigned char)(seed >> 24);
	}
	return b;
}

static void
write_noise(const char *path, size_t n, uint32_t seed)
{
	unsigned char *b = noise(n, seed);

	write_bytes(path, b, n);
	free(b);
}

static char *
slurp(const char *path, size_t *n)
{
	struct stat st;
	char *buf;
	FILE *f;

	if ((f = fopen(path, "rb")) == NULL)
		return NULL;
	if (fstat(fileno(f), &st) < 0 || (buf = malloc((size_t)st.st_size + 1)) == NULL) {
		fclose(f);
		return NULL;
	}
	*n = fread(buf, 1, (size_t)st.st_size, f);
	buf[*n] = '\0';
	fclose(f);
	return buf;
}

static int
same_content(const char *a, const char *b)
{
	size_t na, nb;
	char *x = slurp(a, &na), *y = slurp(b, &nb);
	int same = x != NULL && y != NULL && na == nb && memcmp(x, y, na) == 0;

	free(x);
	free(y);
	return same;
}

static void
hexs(const unsigned char *md, unsigned n, char *out)
{
	for (unsigned i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* The etag huggingface_hub names a blob by: git blob SHA-1, or SHA-256 for
 * an LFS file. */
static void
etag_of(const char *path, int lfs, char *out)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned n;
	size_t len;
	char *data = slurp(path, &len), head[64];
	EVP_MD_CTX *c = EVP_MD_CTX_new();

	if (lfs) {
		EVP_DigestInit_ex(c, EVP_sha256(), NULL);
	} else {
		EVP_DigestInit_ex(c, EVP_sha1(), NULL);
		snprintf(head, sizeof head, "blob %zu", len);
		EVP_DigestUpdate(c, head, strlen(head) + 1);
	}
	EVP_DigestUpdate(c, data, len);
	EVP_DigestFinal_ex(c, md, &n);
	hexs(md, n, out);
	EVP_MD_CTX_free(c);
	free(data);
}

static int
exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

static long long
file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void
rm_rf(const char *path)
{
	nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Lines of the log containing every one of the strings (NULL-terminated). */
static int
log_count(const char *log, ...)
{
	char line[8192];
	int count = 0;
	FILE *f = fopen(log, "r");

	if (f == NULL)
		return 0;
	while (fgets(line, sizeof line, f) != NULL) {
		va_list ap;
		const char *s;
		int all = 1;

		va_start(ap, log);
		while ((s = va_arg(ap, const char *)) != NULL)
			if (strstr(line, s) == NULL)
				all = 0;
		va_end(ap);
		count += all;
	}
	fclose(f);
	return count;
}

static void
nap_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

struct server {
	pid_t pid;
	int port;
	char endpoint[64];
	char log[PATH_MAX];
};

/* Start fakehub on root with extra options (e.g. "-d", "100000", NULL). */
static int
server_start(struct server *s, const char *root, const char *name, ...)
{
	char portfile[PATH_MAX];
	const char *argv[20];
	int argc = 0, i;
	va_list ap;

	pf(portfile, sizeof portfile, "%s/%s.port", tmp, name);
	pf(s->log, sizeof s->log, "%s/%s.log", tmp, name);
	argv[argc++] = fakehub_bin;
	argv[argc++] = "-r";
	argv[argc++] = root;
	argv[argc++] = "-p";
	argv[argc++] = portfile;
	argv[argc++] = "-l";
	argv[argc++] = s->log;
	argv[argc++] = "-t";
	argv[argc++] = "120";
	argv[argc++] = "-T";
	argv[argc++] = "hf_goodtoken";
	va_start(ap, name);
	while (argc < 19 && (argv[argc] = va_arg(ap, const char *)) != NULL)
		argc++;
	va_end(ap);
	argv[argc] = NULL;
	if ((s->pid = fork()) == 0) {
		execv(fakehub_bin, (char *const *)argv);
		_exit(127);
	}
	for (i = 0; i < 200; i++) {
		FILE *f = fopen(portfile, "r");
		if (f != NULL) {
			int ok = fscanf(f, "%d", &s->port) == 1;
			fclose(f);
			if (ok) {
				pf(s->endpoint, sizeof s->endpoint, "http://127.0.0.1:%d",
				    s->port);
				return 0;
			}
		}
		nap_ms(50);
	}
	return -1;
}

static void
server_stop(struct server *s)
{
	if (s->pid > 0) {
		kill(s->pid, SIGTERM);
		waitpid(s->pid, NULL, 0);
		s->pid = 0;
	}
}

static void
options(struct hub_options *o, const char *cache, const struct server *s)
{
	hub_options_init(o);
	o->cache = cache;
	o->endpoint = s != NULL ? s->endpoint : "http://127.0.0.1:1";
	o->timeout_s = 10;
	o->token = "";
}

/* ------------------------------------------------------------ the fake Hub's repos */

static const char model_index[] =
    "{\n  \"_class_name\": \"StableDiffusionPipeline\",\n"
    "  \"_diffusers_version\": \"0.30.3\",\n"
    "  \"feature_extractor\": [null, null],\n"
    "  \"safety_checker\": [\"stable_diffusion\", \"StableDiffusionSafetyChecker\"],\n"
    "  \"scheduler\": [\"diffusers\", \"PNDMScheduler\"],\n"
    "  \"text_encoder\": [\"transformers\", \"CLIPTextModel\"],\n"
    "  \"tokenizer\": [\"transformers\", \"CLIPTokenizer\"],\n"
    "  \"unet\": [\"diffusers\", \"UNet2DConditionModel\"],\n"
    "  \"vae\": [\"diffusers\", \"AutoencoderKL\"]\n}\n";

static char hubroot[PATH_MAX];

static void
make_repos(void)
{
	char p[PATH_MAX];

	pf(hubroot, sizeof hubroot, "%s/hubroot", tmp);
#define F(rel) (pf(p, sizeof p, "%s/test/mini/%s", hubroot, rel), p)
	write_text(F("model_index.json"), model_index);
	write_text(F("README.md"), "# mini\n");
	write_text(F("scheduler/scheduler_config.json"), "{\"_class_name\": \"PNDMScheduler\"}\n");
	write_text(F("text_encoder/config.json"), "{\"num_attention_heads\": 2}\n");
	write_noise(F("text_encoder/model.safetensors"), 300000, 1);
	write_noise(F("text_encoder/model.fp16.safetensors"), 150000, 2);
	write_text(F("tokenizer/vocab.json"), "{\"a\": 0}\n");
	write_text(F("tokenizer/merges.txt"), "#version: 0.2\na b\n");
	write_text(F("tokenizer/special_tokens_map.json"), "{}\n");
	write_text(F("unet/config.json"), "{\"in_channels\": 4}\n");
	write_noise(F("unet/diffusion_pytorch_model.safetensors"), 2000000, 3);
	write_noise(F("unet/diffusion_pytorch_model.fp16.safetensors"), 1000000, 4);
	write_text(F("vae/config.json"), "{}\n");
	write_noise(F("vae/diffusion_pytorch_model.safetensors"), 500000, 5);
	write_noise(F("safety_checker/model.safetensors"), 1000, 6);
	write_text(F(".refs"), "v1.0\n");
#undef F
	pf(p, sizeof p, "%s/test/gated/config.json", hubroot);
	write_text(p, "{\"_class_name\": \"AutoencoderKL\"}\n");
	pf(p, sizeof p, "%s/test/gated/diffusion_pytorch_model.safetensors", hubroot);
	write_noise(p, 4000, 7);
	pf(p, sizeof p, "%s/test/gated/.gated", hubroot);
	write_text(p, "\n");
	pf(p, sizeof p, "%s/test/tok/vocab.json", hubroot);
	write_text(p, "{\"a\": 0}\n");
	pf(p, sizeof p, "%s/test/tok/merges.txt", hubroot);
	write_text(p, "#version: 0.2\n");
	pf(p, sizeof p, "%s/test/tok/config.json", hubroot);
	write_text(p, "{}\n");
	pf(p, sizeof p, "%s/test/empty/README.md", hubroot);
	write_text(p, "nothing here\n");
	pf(p, sizeof p, "%s/test/moved/.moved", hubroot);
	write_text(p, "test/mini\n");
}

/* The commit fakehub gives a repo: SHA-1 of its name. */
static void
commit_of(const char *repo, char out[41])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned n;

	EVP_Digest(repo, strlen(repo), md, &n, EVP_sha1(), NULL);
	hexs(md, n, out);
}

/* Is snapshot entry FILE of the repo in cache laid out as huggingface_hub
 * lays it out: a relative link to ../../blobs/ETAG (one more ../ a
 * folder), the blob holding the source's bytes? */
static int
check_entry(const char *cache, const char *folder, const char *commit,
    const char *file, int lfs, const char *source)
{
	char snap[PATH_MAX], target[PATH_MAX], want[PATH_MAX], etag[65], blob[PATH_MAX];
	ssize_t n;
	const char *p;
	size_t k = 0;

	pf(snap, sizeof snap, "%s/%s/snapshots/%s/%s", cache, folder, commit, file);
	if ((n = readlink(snap, target, sizeof target - 1)) < 0) {
		tap_diag("%s: not a symbolic link (%s)", snap, strerror(errno));
		return 0;
	}
	target[n] = '\0';
	etag_of(source, lfs, etag);
	k += (size_t)snprintf(want, sizeof want, "../../");
	for (p = file; (p = strchr(p, '/')) != NULL; p++)
		k += (size_t)snprintf(want + k, sizeof want - k, "../");
	snprintf(want + k, sizeof want - k, "blobs/%s", etag);
	if (strcmp(target, want) != 0) {
		tap_diag("%s -> %s, expected %s", snap, target, want);
		return 0;
	}
	pf(blob, sizeof blob, "%s/%s/blobs/%s", cache, folder, etag);
	if (!same_content(blob, source)) {
		tap_diag("%s: not the bytes of %s", blob, source);
		return 0;
	}
	return 1;
}

/* ------------------------------------------------------------ tests */

static void
test_parse(void)
{
	struct hub_id id;
	static const char *bad[] = {
		"name", "/abs/org/name", "./x/y", "../x/y", "org/na--me", "org/..",
		"org/name@", "org/-x", "org/x-", "-org/x", "org/name/../etc",
		"org/name@a/..", "org//name", "org/name/", "", "org/na me",
		"org/name@v1//x", "o/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	};
	size_t i;
	int ok = 1;

	tap_ok(hub_parse_id("stable-diffusion-v1-5/stable-diffusion-v1-5", &id) == 0 &&
	    strcmp(id.repo, "stable-diffusion-v1-5/stable-diffusion-v1-5") == 0 &&
	    strcmp(id.revision, "main") == 0 && id.path[0] == '\0',
	    "parse: ORG/NAME, revision main");
	tap_ok(hub_parse_id("org/name@v1.0", &id) == 0 && strcmp(id.repo, "org/name") == 0 &&
	    strcmp(id.revision, "v1.0") == 0 && id.path[0] == '\0',
	    "parse: ORG/NAME@REVISION");
	tap_ok(hub_parse_id("org/name@0123456789abcdef0123456789abcdef01234567/unet/x.safetensors",
	    &id) == 0 && strcmp(id.revision, "0123456789abcdef0123456789abcdef01234567") == 0 &&
	    strcmp(id.path, "unet/x.safetensors") == 0,
	    "parse: ORG/NAME@COMMIT/PATH");
	tap_ok(hub_parse_id("hf://org/name/v1-5.safetensors", &id) == 0 &&
	    strcmp(id.repo, "org/name") == 0 && strcmp(id.path, "v1-5.safetensors") == 0,
	    "parse: hf://ORG/NAME/FILE");
	tap_ok(hub_parse_id("org/name@refs%2Fpr%2F1", &id) == 0 &&
	    strcmp(id.revision, "refs/pr/1") == 0, "parse: a revision with %%2F");
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
		if (hub_is_id(bad[i])) {
			tap_diag("accepted as a Hub id: \"%s\"", bad[i]);
			ok = 0;
		}
	tap_ok(ok, "parse: %zu malformed ids rejected", sizeof bad / sizeof bad[0]);
}

static void
test_cache_dir(void)
{
	struct hub_options o;
	char buf[PATH_MAX];

	hub_options_init(&o);
	setenv("HOME", "/h", 1);
	unsetenv("XDG_CACHE_HOME");
	unsetenv("HF_HOME");
	unsetenv("HF_HUB_CACHE");
	unsetenv("HUGGINGFACE_HUB_CACHE");
	tap_ok(strcmp(hub_cache_dir(&o, buf, sizeof buf), "/h/.cache/huggingface/hub") == 0,
	    "cache: ~/.cache/huggingface/hub by default (%s)", buf);
	setenv("XDG_CACHE_HOME", "/x", 1);
	tap_ok(strcmp(hub_cache_dir(&o, buf, sizeof buf), "/x/huggingface/hub") == 0,
	    "cache: $XDG_CACHE_HOME/huggingface/hub");
	setenv("HF_HOME", "/hf", 1);
	tap_ok(strcmp(hub_cache_dir(&o, buf, sizeof buf), "/hf/hub") == 0,
	    "cache: $HF_HOME/hub");
	setenv("HUGGINGFACE_HUB_CACHE", "/old", 1);
	tap_ok(strcmp(hub_cache_dir(&o, buf, sizeof buf), "/old") == 0,
	    "cache: $HUGGINGFACE_HUB_CACHE (the old name)");
	setenv("HF_HUB_CACHE", "/new", 1);
	tap_ok(strcmp(hub_cache_dir(&o, buf, sizeof buf), "/new") == 0,
	    "cache: $HF_HUB_CACHE first");
	o.cache = "/opt";
	tap_ok(strcmp(hub_cache_dir(&o, buf, sizeof buf), "/opt") == 0 &&
	    hub_repo_dir(&o, "org/name", buf, sizeof buf) == 0 &&
	    strcmp(buf, "/opt/models--org--name") == 0,
	    "cache: the option wins; repo folder models--ORG--NAME");
	unsetenv("XDG_CACHE_HOME");
	unsetenv("HF_HOME");
	unsetenv("HF_HUB_CACHE");
	unsetenv("HUGGINGFACE_HUB_CACHE");
}

/* A cache written the way huggingface_hub writes it (hf_hub_download). */
static void
test_hand_cache(void)
{
	static const char commit[] = "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9";
	static const char *files[][2] = {
		{"model_index.json", NULL}, {"scheduler/scheduler_config.json", NULL},
		{"text_encoder/config.json", NULL}, {"text_encoder/model.safetensors", "lfs"},
		{"tokenizer/vocab.json", NULL}, {"tokenizer/merges.txt", NULL},
		{"unet/config.json", NULL}, {"unet/diffusion_pytorch_model.fp16.safetensors", "lfs"},
		{"vae/config.json", NULL}, {"vae/diffusion_pytorch_model.safetensors", "lfs"},
	};
	char cache[PATH_MAX], repo[PATH_MAX], p[PATH_MAX], src[PATH_MAX], etag[65],
	    link[PATH_MAX], out[PATH_MAX], want[PATH_MAX];
	struct hub_options o;
	struct sd_error err;
	struct hub_id id;
	size_t i;
	int r;

	pf(cache, sizeof cache, "%s/hand", tmp);
	pf(repo, sizeof repo, "%s/models--test--hand", cache);
	for (i = 0; i < sizeof files / sizeof files[0]; i++) {
		const char *f = files[i][0], *q;
		size_t k = 0;

		pf(src, sizeof src, "%s/test/mini/%s", hubroot, f);
		if (!exists(src))
			pf(src, sizeof src, "%s/test/mini/%s", hubroot,
			    "unet/diffusion_pytorch_model.fp16.safetensors");
		etag_of(src, files[i][1] != NULL, etag);
		pf(p, sizeof p, "%s/blobs/%s", repo, etag);
		mkdirs(p);
		rmdir(p);
		{
			size_t n;
			char *data = slurp(src, &n);
			write_bytes(p, data, n);
			free(data);
		}
		k += (size_t)snprintf(link, sizeof link, "../../");
		for (q = f; (q = strchr(q, '/')) != NULL; q++)
			k += (size_t)snprintf(link + k, sizeof link - k, "../");
		snprintf(link + k, sizeof link - k, "blobs/%s", etag);
		pf(p, sizeof p, "%s/snapshots/%s/%s", repo, commit, f);
		mkdirs(p);
		rmdir(p);
		if (symlink(link, p) < 0)
			tap_diag("symlink %s: %s", p, strerror(errno));
	}
	pf(p, sizeof p, "%s/refs/main", repo);
	write_text(p, commit);
	pf(p, sizeof p, "%s/refs/v2", repo);
	write_text(p, commit);
	pf(p, sizeof p, "%s/.no_exist/%s/tokenizer/tokenizer_config.json", repo, commit);
	write_text(p, "");
	pf(want, sizeof want, "%s/snapshots/%s", repo, commit);

	options(&o, cache, NULL);
	sd_error_clear(&err);
	r = hub_cached(&o, "test/hand", out, sizeof out, &err);
	tap_ok(r == 0 && strcmp(out, want) == 0, "hand-laid cache: refs/main -> snapshot (%s)",
	    r == 0 ? out : err.message);
	r = hub_cached(&o, "test/hand@v2", out, sizeof out, &err);
	tap_ok(r == 0 && strcmp(out, want) == 0, "hand-laid cache: a tag's refs/v2");
	pf(p, sizeof p, "test/hand@%s", commit);
	r = hub_cached(&o, p, out, sizeof out, &err);
	tap_ok(r == 0 && strcmp(out, want) == 0, "hand-laid cache: a commit id");
	pf(p, sizeof p, "test/hand@%s/unet/config.json", commit);
	r = hub_cached(&o, p, out, sizeof out, &err);
	tap_ok(r == 0 && strstr(out, "/unet/config.json") != NULL && same_content(out,
	    strcat(strcpy(src, hubroot), "/test/mini/unet/config.json")),
	    "hand-laid cache: one file through its link");
	sd_error_clear(&err);
	r = hub_cached(&o, "test/hand@v9", out, sizeof out, &err);
	tap_ok(r < 0 && err.code == SD_ENOINPUT && strstr(err.message, "refs/v9") != NULL,
	    "hand-laid cache: unknown revision: %s", err.message);
	r = hub_resolve_model("test/hand", &o, out, sizeof out, &err);
	tap_ok(r == 0 && strcmp(out, want) == 0, "hub_resolve_model: from the cache, no network");

	/* hf_hub_download's rules, without a network (the endpoint is dead) */
	hub_parse_id("test/hand", &id);
	snprintf(id.revision, sizeof id.revision, "%s", commit);
	sd_error_clear(&err);
	r = hub_download(&o, &id, "vae/config.json", 0, out, sizeof out, &err);
	tap_ok(r == 0 && strstr(out, "/vae/config.json") != NULL,
	    "download at a cached commit: no network (%s)", r == 0 ? "ok" : err.message);
	hub_parse_id("test/hand", &id);
	o.offline = 1;
	r = hub_download(&o, &id, "tokenizer/tokenizer_config.json", 1, out, sizeof out, &err);
	tap_ok(r == 1, "offline: a .no_exist marker says the optional file is absent");
	sd_error_clear(&err);
	r = hub_download(&o, &id, "tokenizer/tokenizer_config.json", 0, out, sizeof out, &err);
	tap_ok(r < 0 && err.code == SD_ENOINPUT && strstr(err.message, "no file") != NULL,
	    "offline: a .no_exist marker for a required file: %s", err.message);
	sd_error_clear(&err);
	r = hub_download(&o, &id, "unet/diffusion_pytorch_model.safetensors", 0, out,
	    sizeof out, &err);
	tap_ok(r < 0 && strstr(err.message, "HF_HUB_OFFLINE") != NULL,
	    "offline: a file not in the cache: %s", err.message);
	o.offline = 0;
	setenv("HF_HUB_OFFLINE", "1", 1);
	sd_error_clear(&err);
	r = hub_download(&o, &id, "unet/diffusion_pytorch_model.safetensors", 0, out,
	    sizeof out, &err);
	tap_ok(r < 0 && strstr(err.message, "HF_HUB_OFFLINE") != NULL,
	    "HF_HUB_OFFLINE=1 is honoured");
	unsetenv("HF_HUB_OFFLINE");
	/* the Hub is unreachable: the cache answers */
	sd_error_clear(&err);
	r = hub_download(&o, &id, "unet/config.json", 0, out, sizeof out, &err);
	tap_ok(r == 0 && strstr(out, "/unet/config.json") != NULL,
	    "Hub unreachable: the cached file is used");

	/* a snapshot that lacks a part's weights */
	pf(p, sizeof p, "%s/snapshots/%s/vae/diffusion_pytorch_model.safetensors", repo, commit);
	unlink(p);
	sd_error_clear(&err);
	r = hub_cached(&o, "test/hand", out, sizeof out, &err);
	tap_ok(r < 0 && strstr(err.message, "vae/diffusion_pytorch_model.safetensors") != NULL,
	    "an incomplete snapshot names what it lacks: %s", err.message);
	sd_error_clear(&err);
	r = hub_resolve_model("test/hand", &o, out, sizeof out, &err);
	tap_ok(r < 0 && err.code == SD_ENOINPUT && strstr(err.message, "sdbatch pull test/hand"),
	    "hub_resolve_model without downloads says how to get it");
	r = hub_resolve_model(tmp, &o, out, sizeof out, &err);
	tap_ok(r == 0 && strcmp(out, tmp) == 0, "hub_resolve_model: a path is itself");
}

static void
test_pull(const struct server *s)
{
	static const char *fetched[] = {
		"model_index.json", "scheduler/scheduler_config.json",
		"text_encoder/config.json", "text_encoder/model.safetensors",
		"tokenizer/vocab.json", "tokenizer/merges.txt",
		"tokenizer/special_tokens_map.json", "unet/config.json",
		"unet/diffusion_pytorch_model.safetensors", "vae/config.json",
		"vae/diffusion_pytorch_model.safetensors",
	};
	static const char *not_fetched[] = {
		"README.md", "unet/diffusion_pytorch_model.fp16.safetensors",
		"text_encoder/model.fp16.safetensors", "safety_checker/model.safetensors",
	};
	char cache[PATH_MAX], out[PATH_MAX], want[PATH_MAX], commit[41], p[PATH_MAX],
	    src[PATH_MAX];
	struct hub_options o;
	struct sd_error err;
	size_t i, n;
	int r, ok, lines;

	commit_of("test/mini", commit);
	pf(cache, sizeof cache, "%s/c1", tmp);
	options(&o, cache, s);
	sd_error_clear(&err);
	r = hub_pull(&o, "test/mini", NULL, 0, out, sizeof out, &err);
	pf(want, sizeof want, "%s/models--test--mini/snapshots/%s", cache, commit);
	tap_ok(r == 0 && strcmp(out, want) == 0, "pull: the snapshot folder (%s)",
	    r == 0 ? out : err.message);
	pf(p, sizeof p, "%s/models--test--mini/refs/main", cache);
	{
		char *ref = slurp(p, &n);
		tap_ok(ref != NULL && n == 40 && memcmp(ref, commit, 40) == 0,
		    "pull: refs/main holds the commit, no newline");
		free(ref);
	}
	ok = 1;
	for (i = 0; i < sizeof fetched / sizeof fetched[0]; i++) {
		pf(src, sizeof src, "%s/test/mini/%s", hubroot, fetched[i]);
		ok &= check_entry(cache, "models--test--mini", commit, fetched[i],
		    strstr(fetched[i], ".safetensors") != NULL, src);
	}
	tap_ok(ok, "pull: %zu files, relative links to blobs named by git SHA-1 / "
	    "SHA-256, same bytes", sizeof fetched / sizeof fetched[0]);
	ok = 1;
	for (i = 0; i < sizeof not_fetched / sizeof not_fetched[0]; i++) {
		pf(p, sizeof p, "%s/%s", out, not_fetched[i]);
		if (exists(p)) {
			tap_diag("fetched, but not needed: %s", not_fetched[i]);
			ok = 0;
		}
	}
	tap_ok(ok, "pull: only what rendering needs (no fp16 variant, README, safety checker)");
	pf(p, sizeof p, "%s/models--test--mini/.no_exist/%s/tokenizer/tokenizer_config.json",
	    cache, commit);
	tap_ok(exists(p), "pull: a .no_exist marker for the missing tokenizer_config.json");
	{
		char etag[65];
		pf(src, sizeof src, "%s/test/mini/unet/diffusion_pytorch_model.safetensors", hubroot);
		etag_of(src, 1, etag);
		pf(p, sizeof p, "%s/.locks/models--test--mini/%s.lock", cache, etag);
		tap_ok(exists(p), "pull: the blob's lock file is under .locks/models--test--mini/");
		pf(p, sizeof p, "%s/models--test--mini/blobs/%s.incomplete", cache, etag);
		tap_ok(!exists(p), "pull: no .incomplete file left");
	}
	tap_ok(log_count(s->log, "GET /lfs/", NULL) == 3 &&
	    log_count(s->log, "HEAD /test/mini/resolve/main/model_index.json", NULL) == 1 &&
	    log_count(s->log, "HEAD /test/mini/resolve/", commit, "/unet/config.json", NULL) == 1,
	    "pull: a HEAD on main, then the rest at the commit; LFS files from the redirect");

	/* again: one HEAD for the commit, nothing else */
	lines = log_count(s->log, "", NULL);
	r = hub_pull(&o, "test/mini", NULL, 0, out, sizeof out, &err);
	tap_ok(r == 0 && log_count(s->log, "", NULL) == lines + 1,
	    "pull again: one HEAD, no download (%d requests)", log_count(s->log, "", NULL) - lines);

	/* the cache alone now answers */
	lines = log_count(s->log, "", NULL);
	setenv("HF_HUB_OFFLINE", "1", 1);
	r = hub_pull(&o, "test/mini", NULL, 0, out, sizeof out, &err);
	tap_ok(r == 0 && strcmp(out, want) == 0, "HF_HUB_OFFLINE=1: pull of a cached model works");
	r = hub_resolve_model("test/mini", &o, out, sizeof out, &err);
	tap_ok(r == 0 && strcmp(out, want) == 0, "HF_HUB_OFFLINE=1: hub_resolve_model");
	sd_error_clear(&err);
	r = hub_pull(&o, "test/gated", NULL, 0, out, sizeof out, &err);
	tap_ok(r < 0 && strstr(err.message, "HF_HUB_OFFLINE") != NULL,
	    "HF_HUB_OFFLINE=1: an uncached model fails: %s", err.message);
	unsetenv("HF_HUB_OFFLINE");
	tap_ok(log_count(s->log, "", NULL) == lines, "HF_HUB_OFFLINE=1: no request reached the server");

	/* a tag, then one file by id */
	r = hub_pull(&o, "test/mini@v1.0", NULL, 0, out, sizeof out, &err);
	pf(p, sizeof p, "%s/models--test--mini/refs/v1.0", cache);
	{
		char *ref = slurp(p, &n);
		tap_ok(r == 0 && ref != NULL && n == 40 && memcmp(ref, commit, 40) == 0,
		    "pull ID@TAG writes refs/TAG");
		free(ref);
	}
	r = hub_pull(&o, "test/mini/README.md", NULL, 0, out, sizeof out, &err);
	pf(src, sizeof src, "%s/test/mini/README.md", hubroot);
	tap_ok(r == 0 && same_content(out, src) && check_entry(cache, "models--test--mini",
	    commit, "README.md", 0, src), "pull ID/FILE: that file");
	{
		const char *two[] = { "unet/diffusion_pytorch_model.fp16.safetensors", "README.md" };
		r = hub_pull(&o, "test/mini", two, 2, out, sizeof out, &err);
		tap_ok(r == 0 && strcmp(out, want) == 0, "pull ID FILE...: listed files (%s)",
		    r == 0 ? out : err.message);
	}

	/* a model the job asks in fp16: its variant files */
	pf(cache, sizeof cache, "%s/c2", tmp);
	options(&o, cache, s);
	o.prefer_fp16 = 1;
	r = hub_pull(&o, "test/mini", NULL, 0, out, sizeof out, &err);
	pf(p, sizeof p, "%s/unet/diffusion_pytorch_model.fp16.safetensors", out);
	ok = r == 0 && exists(p);
	pf(p, sizeof p, "%s/text_encoder/model.fp16.safetensors", out);
	ok &= exists(p);
	pf(p, sizeof p, "%s/unet/diffusion_pytorch_model.safetensors", out);
	ok &= !exists(p);
	pf(p, sizeof p, "%s/vae/diffusion_pytorch_model.safetensors", out);
	ok &= exists(p);
	pf(p, sizeof p, "%s/models--test--mini/.no_exist/%s/vae/diffusion_pytorch_model.fp16.safetensors",
	    cache, commit);
	ok &= exists(p);
	tap_ok(ok, "fp16: the variant where there is one, the full weights elsewhere");
	o.prefer_fp16 = 0;
	sd_error_clear(&err);
	r = hub_cached(&o, "test/mini", out, sizeof out, &err);
	tap_ok(r == 0, "fp16 weights count as the part's weights in the cache");

	/* a file system without symbolic links: real files in snapshots/,
	 * the new blobs moved there (as huggingface_hub does) */
	{
		char c9[PATH_MAX], etag[65], blob[PATH_MAX];
		struct stat st;

		pf(c9, sizeof c9, "%s/c9", tmp);
		options(&o, c9, s);
		o.no_symlinks = 1;
		sd_error_clear(&err);
		r = hub_pull(&o, "test/mini", NULL, 0, out, sizeof out, &err);
		pf(p, sizeof p, "%s/unet/diffusion_pytorch_model.safetensors", out);
		pf(src, sizeof src, "%s/test/mini/unet/diffusion_pytorch_model.safetensors",
		    hubroot);
		etag_of(src, 1, etag);
		pf(blob, sizeof blob, "%s/models--test--mini/blobs/%s", c9, etag);
		tap_ok(r == 0 && lstat(p, &st) == 0 && S_ISREG(st.st_mode) &&
		    same_content(p, src) && !exists(blob),
		    "no symbolic links: real files in the snapshot (%s)",
		    r == 0 ? "ok" : err.message);
		lines = log_count(s->log, "", NULL);
		r = hub_pull(&o, "test/mini", NULL, 0, out, sizeof out, &err);
		tap_ok(r == 0 && log_count(s->log, "", NULL) == lines + 1 &&
		    hub_cached(&o, "test/mini", p, sizeof p, &err) == 0,
		    "no symbolic links: found again, nothing downloaded");
		options(&o, cache, s);
	}

	/* a tokenizer repo (as openai/clip-vit-large-patch14) */
	sd_error_clear(&err);
	r = hub_pull(&o, "test/tok", NULL, 0, out, sizeof out, &err);
	pf(p, sizeof p, "%s/merges.txt", out);
	ok = r == 0 && exists(p) && strstr(out, "/models--test--tok/snapshots/") != NULL;
	tap_ok(ok && hub_cached(&o, "test/tok", p, sizeof p, &err) == 0 && strcmp(p, out) == 0,
	    "a tokenizer repo: its files, the snapshot folder (%s)", r == 0 ? out : err.message);
	sd_error_clear(&err);
	r = hub_pull(&o, "test/empty", NULL, 0, out, sizeof out, &err);
	tap_ok(r < 0 && err.code == SD_ENOINPUT && strstr(err.message, "holds neither"),
	    "a repo with nothing to render with: %s", err.message);

	/* a renamed repo: a relative redirect */
	r = hub_pull(&o, "test/moved", NULL, 0, out, sizeof out, &err);
	pf(want, sizeof want, "%s/models--test--moved/snapshots/%s", cache, commit);
	tap_ok(r == 0 && strcmp(out, want) == 0 && log_count(s->log, "status=307", NULL) > 0,
	    "a relative redirect (renamed repo) is followed (%s)", r == 0 ? out : err.message);
}

static void
test_errors(const struct server *s)
{
	char cache[PATH_MAX], out[PATH_MAX], p[PATH_MAX], commit[41];
	struct hub_options o;
	struct sd_error err;
	int r;

	pf(cache, sizeof cache, "%s/c3", tmp);
	options(&o, cache, s);
	sd_error_clear(&err);
	r = hub_pull(&o, "test/gated", NULL, 0, out, sizeof out, &err);
	tap_ok(r < 0 && err.code == SD_EUNAVAILABLE && strstr(err.message, "gated") &&
	    strstr(err.message, "HF_TOKEN") && strstr(err.message, "accept"),
	    "gated, no token: %s", err.message);
	o.token = "hf_wrongtoken";
	sd_error_clear(&err);
	r = hub_pull(&o, "test/gated", NULL, 0, out, sizeof out, &err);
	tap_ok(r < 0 && strstr(err.message, "no access") != NULL &&
	    strstr(err.message, "hf_wrongtoken") == NULL && log_count(s->log, "auth=bad", NULL) > 0,
	    "gated, wrong token: %s", err.message);
	o.token = NULL;
	setenv("HF_TOKEN", "hf_goodtoken", 1);
	sd_error_clear(&err);
	r = hub_pull(&o, "test/gated", NULL, 0, out, sizeof out, &err);
	tap_ok(r == 0 && strstr(out, "/diffusion_pytorch_model.safetensors") != NULL &&
	    log_count(s->log, "/test/gated/", "auth=ok", NULL) >= 2,
	    "gated, $HF_TOKEN sent as Bearer: a one-part repo gives its weights file (%s)",
	    r == 0 ? out : err.message);
	unsetenv("HF_TOKEN");
	pf(p, sizeof p, "%s/hftoken", tmp);
	write_text(p, "  hf_goodtoken\n");
	setenv("HF_TOKEN_PATH", p, 1);
	o.token = NULL;
	sd_error_clear(&err);
	pf(cache, sizeof cache, "%s/c4", tmp);
	options(&o, cache, s);
	o.token = NULL;
	r = hub_pull(&o, "test/gated", NULL, 0, out, sizeof out, &err);
	tap_ok(r == 0, "gated: the token file works (%s)", r == 0 ? "ok" : err.message);
	unsetenv("HF_TOKEN_PATH");
	o.token = "";

	sd_error_clear(&err);
	r = hub_pull(&o, "test/nope", NULL, 0, out, sizeof out, &err);
	tap_ok(r < 0 && err.code == SD_ENOINPUT && strstr(err.message, "no such model repository"),
	    "RepoNotFound: %s", err.message);
	sd_error_clear(&err);
	r = hub_pull(&o, "test/mini@nope", NULL, 0, out, sizeof out, &err);
	tap_ok(r < 0 && err.code == SD_ENOINPUT && strstr(err.message, "no revision \"nope\""),
	    "RevisionNotFound: %s", err.message);
	sd_error_clear(&err);
	{
		const char *missing[] = { "unet/missing.bin" };
		r = hub_pull(&o, "test/mini", missing, 1, out, sizeof out, &err);
	}
	commit_of("test/mini", commit);
	pf(p, sizeof p, "%s/models--test--mini/.no_exist/%s/unet/missing.bin", cache, commit);
	tap_ok(r < 0 && err.code == SD_ENOINPUT && strstr(err.message, "no file unet/missing.bin") &&
	    exists(p), "EntryNotFound: %s (and a .no_exist marker)", err.message);
	{
		struct hub_options dead;
		options(&dead, cache, NULL);
		sd_error_clear(&err);
		r = hub_pull(&dead, "test/other", NULL, 0, out, sizeof out, &err);
		tap_ok(r < 0 && err.code == SD_EUNAVAILABLE && strstr(err.message, "cannot reach"),
		    "no Hub and no cache: %s", err.message);
	}
}

/* A download waits for the lock another process holds on the blob, and
 * uses the blob that process wrote instead of fetching it again. */
static void
test_lock(const struct server *s)
{
	char cache[PATH_MAX], src[PATH_MAX], etag[65], lock[PATH_MAX], blob[PATH_MAX],
	    out[PATH_MAX], commit[41];
	struct hub_options o;
	int fd, status = -1, before;
	pid_t child;
	size_t n;
	char *data;

	commit_of("test/mini", commit);
	pf(cache, sizeof cache, "%s/c8", tmp);
	pf(src, sizeof src, "%s/test/mini/vae/diffusion_pytorch_model.safetensors", hubroot);
	etag_of(src, 1, etag);
	pf(lock, sizeof lock, "%s/.locks/models--test--mini/%s.lock", cache, etag);
	pf(blob, sizeof blob, "%s/models--test--mini/blobs/%s", cache, etag);
	write_text(lock, "");
	if ((fd = open(lock, O_RDWR)) < 0 || flock(fd, LOCK_EX) < 0) {
		tap_ok(0, "lock: cannot take %s", lock);
		return;
	}
	options(&o, cache, s);
	before = log_count(s->log, "GET /lfs/", NULL);
	fflush(stdout);
	if ((child = fork()) == 0) {
		close(fd);	/* the lock belongs to the parent's open file */
		int r = hub_pull(&o, "test/mini/vae/diffusion_pytorch_model.safetensors",
		    NULL, 0, out, sizeof out, NULL);
		_exit(r == 0 && same_content(out, src) ? 0 : 1);
	}
	nap_ms(400);
	tap_ok(waitpid(child, &status, WNOHANG) == 0 && !exists(blob),
	    "lock: a download waits while another process holds the blob's lock");
	/* "the other process" finishes: the blob appears, the lock goes */
	data = slurp(src, &n);
	write_bytes(blob, data, n);
	free(data);
	close(fd);
	waitpid(child, &status, 0);
	tap_ok(WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
	    log_count(s->log, "GET /lfs/", NULL) == before,
	    "lock: then it links the blob the other process wrote, without a download");
}

/* The server answers 503 twice, then drops the connection halfway through
 * each LFS file once. */
static void
test_drop(void)
{
	struct server s = {0};
	char cache[PATH_MAX], out[PATH_MAX], src[PATH_MAX], commit[41];
	struct hub_options o;
	struct sd_error err;
	int r;

	if (server_start(&s, hubroot, "drop", "-d", "100000", "-e", "2", NULL) < 0) {
		tap_ok(0, "fakehub -d starts");
		return;
	}
	commit_of("test/mini", commit);
	pf(cache, sizeof cache, "%s/c5", tmp);
	options(&o, cache, &s);
	sd_error_clear(&err);
	r = hub_pull(&o, "test/mini", NULL, 0, out, sizeof out, &err);
	pf(src, sizeof src, "%s/test/mini/unet/diffusion_pytorch_model.safetensors", hubroot);
	tap_ok(r == 0 && check_entry(cache, "models--test--mini", commit,
	    "unet/diffusion_pytorch_model.safetensors", 1, src),
	    "dropped connections: resumed and complete (%s)", r == 0 ? "ok" : err.message);
	tap_ok(log_count(s.log, "GET /lfs/", "range=bytes=100000-", "status=206", NULL) == 3,
	    "dropped connections: each LFS file resumed with Range: bytes=100000-");
	tap_ok(log_count(s.log, "HEAD /test/mini/resolve/main/model_index.json", NULL) == 3 &&
	    log_count(s.log, "status=503", NULL) == 2,
	    "a server error (503) on a HEAD is retried");
	server_stop(&s);
}

/* A download killed with SIGKILL resumes where it stopped. */
static void
test_kill(void)
{
	struct server s = {0};
	char cache[PATH_MAX], out[PATH_MAX], src[PATH_MAX], etag[65], part[PATH_MAX],
	    blob[PATH_MAX], range[64], commit[41], snap[PATH_MAX];
	struct hub_options o;
	struct sd_error err;
	long long have = -1;
	pid_t child;
	int r, i;

	if (server_start(&s, hubroot, "slow", "-s", "600000", NULL) < 0) {
		tap_ok(0, "fakehub -s starts");
		return;
	}
	commit_of("test/mini", commit);
	pf(cache, sizeof cache, "%s/c6", tmp);
	pf(src, sizeof src, "%s/test/mini/unet/diffusion_pytorch_model.safetensors", hubroot);
	etag_of(src, 1, etag);
	pf(blob, sizeof blob, "%s/models--test--mini/blobs/%s", cache, etag);
	pf(part, sizeof part, "%s.incomplete", blob);
	pf(snap, sizeof snap, "%s/models--test--mini/snapshots/%s/unet/"
	    "diffusion_pytorch_model.safetensors", cache, commit);
	options(&o, cache, &s);
	fflush(stdout);
	if ((child = fork()) == 0) {
		r = hub_pull(&o, "test/mini/unet/diffusion_pytorch_model.safetensors", NULL, 0,
		    out, sizeof out, NULL);
		_exit(r == 0 ? 0 : 1);
	}
	for (i = 0; i < 400 && (have = file_size(part)) < 300000; i++)
		nap_ms(25);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	have = file_size(part);
	tap_ok(have >= 300000 && have < 2000000 && !exists(blob) && !exists(snap),
	    "kill -9 mid-file: %lld bytes in the .incomplete file, no blob, no link", have);
	sd_error_clear(&err);
	r = hub_pull(&o, "test/mini/unet/diffusion_pytorch_model.safetensors", NULL, 0, out,
	    sizeof out, &err);
	snprintf(range, sizeof range, "range=bytes=%lld-", have);
	tap_ok(r == 0 && !exists(part) && check_entry(cache, "models--test--mini", commit,
	    "unet/diffusion_pytorch_model.safetensors", 1, src) &&
	    log_count(s.log, "GET /lfs/", range, "status=206", NULL) == 1,
	    "resumed after kill -9 with Range: bytes=%lld- (%s)", have,
	    r == 0 ? "ok" : err.message);
	server_stop(&s);
}

/* A partial download that is not what the server has: SHA-256 catches it. */
static void
test_corrupt(const struct server *s)
{
	char cache[PATH_MAX], out[PATH_MAX], src[PATH_MAX], etag[65], part[PATH_MAX];
	struct hub_options o;
	struct sd_error err;
	int r;

	pf(cache, sizeof cache, "%s/c7", tmp);
	pf(src, sizeof src, "%s/test/mini/vae/diffusion_pytorch_model.safetensors", hubroot);
	etag_of(src, 1, etag);
	pf(part, sizeof part, "%s/models--test--mini/blobs/%s.incomplete", cache, etag);
	write_noise(part, 1234, 99);
	options(&o, cache, s);
	sd_error_clear(&err);
	r = hub_pull(&o, "test/mini/vae/diffusion_pytorch_model.safetensors", NULL, 0, out,
	    sizeof out, &err);
	tap_ok(r < 0 && err.code == SD_EIO && strstr(err.message, "SHA-256") && !exists(part),
	    "a corrupt download is caught and removed: %s", err.message);
	sd_error_clear(&err);
	r = hub_pull(&o, "test/mini/vae/diffusion_pytorch_model.safetensors", NULL, 0, out,
	    sizeof out, &err);
	tap_ok(r == 0 && same_content(out, src), "then a new download succeeds");
}

int
main(int argc, char **argv)
{
	struct server s = {0};
	const char *slash;

	(void)argc;
	signal(SIGPIPE, SIG_IGN);
	slash = strrchr(argv[0], '/');
	pf(fakehub_bin, sizeof fakehub_bin, "%.*s/fakehub",
	    slash ? (int)(slash - argv[0]) : 1, slash ? argv[0] : ".");
	unsetenv("HF_TOKEN");
	unsetenv("HUGGING_FACE_HUB_TOKEN");
	unsetenv("HF_TOKEN_PATH");
	unsetenv("HF_HUB_OFFLINE");
	unsetenv("HF_ENDPOINT");
	setenv("HF_HOME", "/nonexistent-hf-home", 1);
	pf(tmp, sizeof tmp, "%s/sdbatch-hub.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (mkdtemp(tmp) == NULL)
		return tap_skip_all("cannot make a temporary folder");
	make_repos();
	test_parse();
	test_cache_dir();
	setenv("HF_HOME", "/nonexistent-hf-home", 1);
	test_hand_cache();
	if (access(fakehub_bin, X_OK) != 0) {
		tap_skip("no %s: the download tests", fakehub_bin);
	} else if (server_start(&s, hubroot, "hub", NULL) < 0) {
		tap_ok(0, "fakehub starts");
	} else {
		test_pull(&s);
		test_errors(&s);
		test_corrupt(&s);
		test_lock(&s);
		server_stop(&s);
		test_drop();
		test_kill();
	}
	if (getenv("KEEP") == NULL)
		rm_rf(tmp);
	else
		tap_diag("kept %s", tmp);
	return tap_done();
}
