/* gallery.c: the gallery page and the confined reading of images. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/fileio.h"
#include "io/image.h"
#include "io/png.h"
#include "spool/job.h"
#include "spool/util.h"
#include "web/gallery.h"

/* A growing string; on out of memory it stays failed and the page is
 * dropped at the end. */
/* The longer side of a thumbnail. */
#define GALLERY_THUMB 320

struct sbuf {
	char *s;
	size_t n, cap;
	int failed;
};

static void
sb_add(struct sbuf *b, const char *s, size_t n)
{
	if (b->failed)
		return;
	if (b->n + n + 1 > b->cap) {
		size_t nc = b->cap ? b->cap : 4096;
		char *ns;
		while (nc < b->n + n + 1)
			nc *= 2;
		if ((ns = realloc(b->s, nc)) == NULL) {
			b->failed = 1;
			return;
		}
		b->s = ns;
		b->cap = nc;
	}
	memcpy(b->s + b->n, s, n);
	b->n += n;
	b->s[b->n] = '\0';
}

static void
sb_puts(struct sbuf *b, const char *s)
{
	sb_add(b, s, strlen(s));
}

static void sb_printf(struct sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
sb_printf(struct sbuf *b, const char *fmt, ...)
{
	char small[512], *big = NULL;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(small, sizeof small, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n < sizeof small) {
		sb_add(b, small, (size_t)n);
		return;
	}
	if ((big = malloc((size_t)n + 1)) == NULL) {
		b->failed = 1;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	sb_add(b, big, (size_t)n);
	free(big);
}

/* Text escaped for HTML content and quoted attribute values. */
static void
sb_html(struct sbuf *b, const char *s)
{
	const char *p;

	if (s == NULL)
		return;
	for (p = s; *p; p++) {
		switch (*p) {
		case '&': sb_puts(b, "&amp;"); break;
		case '<': sb_puts(b, "&lt;"); break;
		case '>': sb_puts(b, "&gt;"); break;
		case '"': sb_puts(b, "&quot;"); break;
		case '\'': sb_puts(b, "&#39;"); break;
		default:
			if ((unsigned char)*p < 0x20 && *p != '\n' && *p != '\t')
				sb_puts(b, " ");
			else
				sb_add(b, p, 1);
		}
	}
}

/* A word for a POSIX shell: single-quoted unless it is plain. */
static void
sb_shell(struct sbuf *b, const char *s)
{
	const char *p;

	if (s[0] != '\0' && strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "0123456789._-/:=+,") == strlen(s)) {
		sb_html(b, s);
		return;
	}
	sb_puts(b, "&#39;");
	for (p = s; *p; p++) {
		if (*p == '\'')
			sb_puts(b, "&#39;\\&#39;&#39;");
		else {
			char c[2] = { *p, '\0' };
			sb_html(b, c);
		}
	}
	sb_puts(b, "&#39;");
}

static const char *
jstr(const json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

/* A scalar of a record as text ("" when absent). */
static void
jtext(const json_t *o, const char *key, char *buf, size_t size)
{
	const json_t *v = json_object_get(o, key);

	if (json_is_string(v))
		snprintf(buf, size, "%s", json_string_value(v));
	else if (json_is_integer(v))
		snprintf(buf, size, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
	else if (json_is_real(v))
		snprintf(buf, size, "%g", json_real_value(v));
	else if (json_is_boolean(v))
		snprintf(buf, size, "%s", json_is_true(v) ? "true" : "false");
	else
		buf[0] = '\0';
}

/* A number of a record as text ("" when absent or not a number: nothing
 * else goes into the page unescaped). */
static void
jnum(const json_t *o, const char *key, char *buf, size_t size)
{
	const json_t *v = json_object_get(o, key);

	if (json_is_number(v))
		jtext(o, key, buf, size);
	else
		buf[0] = '\0';
}

json_t *
gallery_read_record(struct spool *s, const char *id)
{
	const char *dirs[2] = { s->done, s->failed };
	int i;

	if (!util_valid_id(id))
		return NULL;
	for (i = 0; i < 2; i++) {
		char *p = util_printf("%s/%s.json", dirs[i], id), *text;
		size_t len;
		json_t *rec;

		if (p == NULL)
			return NULL;
		text = util_read_file(p, 64u << 20, 1, &len, NULL);
		free(p);
		if (text == NULL)
			continue;
		rec = json_loadb(text, len, 0, NULL);
		free(text);
		if (json_is_object(rec))
			return rec;
		json_decref(rec);
	}
	return NULL;
}

int
gallery_open_image(struct spool *s, const struct sd_config *cfg,
    const char *path, long long *size, struct sd_error *err)
{
	const char *root = cfg->output_root ? cfg->output_root : s->output;
	char realroot[PATH_MAX], *rel, *tok, *save = NULL, *next;
	size_t n;
	struct stat st;
	int fd, nfd;

	if (path == NULL || path[0] != '/')
		return sd_fail(err, SD_EDATA, "the record names no absolute image path");
	if (realpath(root, realroot) == NULL)
		return sd_fail(err, SD_ENOINPUT, "output root %s: %s", root,
		    strerror(errno));
	n = strlen(realroot);
	if (strncmp(path, realroot, n) != 0 || path[n] != '/')
		return sd_fail(err, SD_EDATA, "the image is outside the output root");
	if ((rel = strdup(path + n + 1)) == NULL)
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	if ((fd = open(realroot, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		free(rel);
		return sd_fail(err, SD_EIO, "output root %s: %s", realroot,
		    strerror(errno));
	}
	for (tok = strtok_r(rel, "/", &save); tok != NULL; tok = next) {
		int last;
		next = strtok_r(NULL, "/", &save);
		last = next == NULL;
		if (strcmp(tok, ".") == 0 || strcmp(tok, "..") == 0) {
			sd_fail(err, SD_EDATA, "the image path holds \"%s\"", tok);
			goto fail;
		}
		nfd = openat(fd, tok, last ? O_RDONLY | O_NOFOLLOW | O_CLOEXEC |
		    O_NONBLOCK : O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (nfd < 0) {
			if (errno == ENOENT)
				sd_fail(err, SD_ENOINPUT, "the image is gone");
			else if (errno == ELOOP || errno == ENOTDIR)
				sd_fail(err, SD_EDATA, "the image path leads through a "
				    "symbolic link");
			else
				sd_fail(err, SD_EIO, "the image: %s", strerror(errno));
			goto fail;
		}
		close(fd);
		fd = nfd;
	}
	free(rel);
	rel = NULL;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		sd_fail(err, SD_EDATA, "the image is not a regular file");
		goto fail;
	}
	/* O_NONBLOCK was only for the open (a FIFO must not block it). */
	(void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	*size = (long long)st.st_size;
	return fd;
fail:
	free(rel);
	close(fd);
	return -1;
}

int
gallery_thumbnail(int fd, int size, unsigned char **png, size_t *len,
    struct sd_error *err)
{
	struct sd_image_u8 img = { 0, 0, 0, NULL }, small = { 0, 0, 0, NULL };
	char path[64];
	int w, h, r;

	/* The descriptor's own file: no path is looked up again. */
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	if (png_read_rgb(path, &img, err) < 0)
		return -1;
	w = img.width;
	h = img.height;
	if (w > size || h > size) {
		if (w >= h) {
			h = (int)((long long)h * size / w);
			w = size;
		} else {
			w = (int)((long long)w * size / h);
			h = size;
		}
		if (w < 1)
			w = 1;
		if (h < 1)
			h = 1;
		if (image_resize_lanczos(&img, w, h, &small, err) < 0) {
			image_free(&img);
			return -1;
		}
		image_free(&img);
		img = small;
	}
	r = png_encode_rgb(img.data, img.width, img.height, NULL, 0, png, len, err);
	image_free(&img);
	return r;
}

struct image_ref {
	const json_t *record;	/* borrowed from the listing */
	const json_t *image;	/* images[index] */
	const char *id;
	const char *finished;	/* RFC 3339 UTC: sorts as text */
	int index;
	double time;
};

/* Newest first: by the time the job finished (the record's "finished"),
 * else the job file's time. */
static int
by_time_desc(const void *a, const void *b)
{
	const struct image_ref *x = a, *y = b;

	if (x->finished != NULL && y->finished != NULL &&
	    strcmp(x->finished, y->finished) != 0)
		return strcmp(y->finished, x->finished);
	if (x->time != y->time)
		return x->time < y->time ? 1 : -1;
	if (strcmp(x->id, y->id) != 0)
		return strcmp(x->id, y->id);
	return x->index - y->index;
}

static int
by_mtime_desc(const void *a, const void *b)
{
	const struct spool_entry *x = a, *y = b;

	return x->mtime < y->mtime ? 1 : x->mtime > y->mtime ? -1 : 0;
}

/* The job fields of a record's parameters (nulls and run-time values
 * dropped) for this image's seed: what Redo submits. */
static json_t *
redo_job(const json_t *params, const json_t *image)
{
	json_t *job = json_object();
	int f;

	if (job == NULL || !json_is_object(params))
		return job;
	for (f = 0; f < JF_COUNT_; f++) {
		const char *name = job_field_name((enum job_field)f);
		json_t *v = json_object_get(params, name);
		if (v == NULL || json_is_null(v) || f == JF_OUTPUT || f == JF_COUNT ||
		    f == JF_CALLBACK || f == JF_METADATA)
			continue;
		json_object_set(job, name, v);
	}
	if (json_object_get(image, "seed") != NULL)
		json_object_set(job, "seed", json_object_get(image, "seed"));
	return job;
}

/* The `sdbatch run` command line of this image: every field of the record
 * that has a run flag in the parameter table, with this image's seed. */
static void
redo_command(struct sbuf *b, const json_t *params, const json_t *image)
{
	char v[4096];

	sb_puts(b, "sdbatch run");
	for (int f = 0; f < JF_COUNT_; f++) {
		const struct param_def *d = params_by_field((enum job_field)f);
		const json_t *lv;
		size_t i;
		if (d == NULL || d->flag == NULL || f == JF_OUTPUT || f == JF_COUNT ||
		    f == JF_CALLBACK || f == JF_METADATA || f == JF_SEED)
			continue;
		if (d->type == PARAM_LORAS) {
			json_array_foreach(json_object_get(params, d->name), i, lv) {
				char sc[64];
				jtext(lv, "file", v, sizeof v);
				jtext(lv, "scale", sc, sizeof sc);
				if (v[0] == '\0')
					continue;
				sb_printf(b, " --%s ", d->flag);
				if (sc[0] != '\0')
					snprintf(v + strlen(v), sizeof v - strlen(v), ":%s", sc);
				sb_shell(b, v);
			}
			continue;
		}
		jtext(params, d->name, v, sizeof v);
		if (d->flag_value != NULL) {
			/* a flag without an argument (--no-t5): when it applies */
			if (strcmp(v, d->flag_value) == 0)
				sb_printf(b, " --%s", d->flag);
			continue;
		}
		if (v[0] == '\0' && f != JF_PROMPT)
			continue;
		sb_printf(b, " --%s ", d->flag);
		sb_shell(b, v);
	}
	jtext(image, "seed", v, sizeof v);
	if (v[0] != '\0') {
		sb_puts(b, " --seed ");
		sb_shell(b, v);
	}
	sb_puts(b, " -o redo-{seed}.png");
}

static void
card(struct sbuf *b, const struct image_ref *r, int live)
{
	const json_t *params = json_object_get(r->record, "parameters");
	const json_t *model = json_object_get(r->record, "model");
	char src[600], thumb[640], seed[32], steps[32], w[32], h[32], sampler[64],
	    cfgs[32];
	const char *mpath = jstr(model, "path"), *mname, *neg;
	json_t *job;
	char *jobtext;

	if (live) {
		snprintf(src, sizeof src, "/v1/jobs/%s/images/%d.png", r->id, r->index);
		snprintf(thumb, sizeof thumb, "%s?size=%d", src, GALLERY_THUMB);
	} else {
		snprintf(src, sizeof src, "images/%s-%d.png", r->id, r->index);
		snprintf(thumb, sizeof thumb, "thumbs/%s-%d.png", r->id, r->index);
	}
	jnum(r->image, "seed", seed, sizeof seed);
	jnum(r->image, "width", w, sizeof w);
	jnum(r->image, "height", h, sizeof h);
	jnum(params, "steps", steps, sizeof steps);
	jtext(params, "sampler", sampler, sizeof sampler);
	jnum(params, "guidance_scale", cfgs, sizeof cfgs);
	if (mpath == NULL)
		mpath = jstr(params, "model");
	mname = mpath ? strrchr(mpath, '/') : NULL;
	mname = mname ? mname + 1 : mpath ? mpath : "";
	neg = jstr(params, "negative_prompt");
	sb_printf(b, "<figure class=\"card\" data-job=\"%s\" data-index=\"%d\">\n",
	    r->id, r->index);
	sb_printf(b, "<a href=\"%s\"><img src=\"%s\" alt=\"", src, thumb);
	sb_html(b, jstr(params, "prompt"));
	sb_printf(b, "\" width=\"%s\" height=\"%s\" loading=\"lazy\"></a>\n<figcaption>\n"
	    "<p class=\"prompt\">", w, h);
	sb_html(b, jstr(params, "prompt"));
	sb_puts(b, "</p>\n");
	if (neg != NULL && neg[0] != '\0') {
		sb_puts(b, "<p class=\"negative\"><span>Negative:</span> ");
		sb_html(b, neg);
		sb_puts(b, "</p>\n");
	}
	sb_puts(b, "<dl>");
	sb_printf(b, "<dt>Seed</dt><dd class=\"seed\">%s</dd>", seed);
	sb_puts(b, "<dt>Sampler</dt><dd class=\"sampler\">");
	sb_html(b, sampler);
	sb_printf(b, "</dd><dt>Steps</dt><dd class=\"steps\">%s</dd>", steps);
	sb_printf(b, "<dt>CFG</dt><dd class=\"guidance\">%s</dd>", cfgs);
	sb_printf(b, "<dt>Size</dt><dd class=\"size\">%sx%s</dd>", w, h);
	sb_puts(b, "<dt>Model</dt><dd class=\"model\">");
	sb_html(b, mname);
	sb_printf(b, "</dd><dt>Job</dt><dd class=\"job\">%s</dd></dl>\n", r->id);
	sb_printf(b, "<p class=\"links\"><a href=\"%s\" download>PNG</a></p>\n", src);
	sb_puts(b, "<details class=\"redo\"><summary>Render again</summary>"
	    "<code>");
	redo_command(b, params, r->image);
	sb_puts(b, "</code>");
	if (live) {
		job = redo_job(params, r->image);
		jobtext = job ? json_dumps(job, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
		json_decref(job);
		if (jobtext != NULL) {
			sb_puts(b, "<button type=\"button\" class=\"redo-button\" "
			    "data-job=\"");
			sb_html(b, jobtext);
			sb_puts(b, "\">Redo</button><span class=\"redo-status\"></span>");
			free(jobtext);
		}
	}
	sb_puts(b, "</details>\n</figcaption>\n</figure>\n");
}

static const char gallery_css[] =
	":root{color-scheme:light dark;--bg:#f6f6f4;--fg:#1d1d1b;--card:#fff;"
	"--muted:#6b6b66;--line:#d8d8d2;--bad:#a4161a;--accent:#2f5d8a}\n"
	"@media (prefers-color-scheme:dark){:root{--bg:#161614;--fg:#e9e9e4;"
	"--card:#22221f;--muted:#a2a29a;--line:#3a3a35;--bad:#ff6b6b;"
	"--accent:#8ab4e0}}\n"
	"*{box-sizing:border-box}\n"
	"body{margin:0;font:15px/1.45 system-ui,sans-serif;background:var(--bg);"
	"color:var(--fg)}\n"
	"header{padding:1rem 1.5rem;border-bottom:1px solid var(--line)}\n"
	"header h1{margin:0;font-size:1.3rem}header p{margin:.2rem 0 0;"
	"color:var(--muted)}\n"
	"main{padding:1rem 1.5rem}h2{font-size:1.05rem;margin:1.2rem 0 .6rem}\n"
	".grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(240px,1fr));"
	"gap:1rem}\n"
	".card{margin:0;background:var(--card);border:1px solid var(--line);"
	"border-radius:8px;overflow:hidden;display:flex;flex-direction:column}\n"
	".card img{display:block;width:100%;height:auto;aspect-ratio:auto;"
	"image-rendering:auto;background:var(--line)}\n"
	"figcaption{padding:.6rem .75rem .75rem}\n"
	".prompt{margin:0 0 .35rem;font-weight:600;overflow-wrap:anywhere}\n"
	".negative{margin:0 0 .35rem;color:var(--muted);overflow-wrap:anywhere}\n"
	".negative span{font-weight:600}\n"
	"dl{display:grid;grid-template-columns:auto 1fr;gap:.1rem .6rem;margin:.3rem 0;"
	"font-size:.85rem}\n"
	"dt{color:var(--muted)}dd{margin:0;overflow-wrap:anywhere}\n"
	".links{margin:.3rem 0}a{color:var(--accent)}\n"
	"details.redo summary{cursor:pointer;color:var(--accent);font-size:.85rem}\n"
	"details.redo code{display:block;margin:.4rem 0;padding:.4rem;font-size:.75rem;"
	"background:var(--bg);border-radius:4px;overflow-wrap:anywhere;"
	"user-select:all}\n"
	"button{font:inherit;padding:.2rem .8rem;border-radius:4px;"
	"border:1px solid var(--line);background:var(--card);color:var(--fg);"
	"cursor:pointer}\n"
	".redo-status{margin-left:.5rem;font-size:.8rem;color:var(--muted)}\n"
	".jobs{list-style:none;padding:0;margin:0}\n"
	".jobs li{background:var(--card);border:1px solid var(--line);border-radius:6px;"
	"padding:.5rem .75rem;margin:0 0 .5rem;overflow-wrap:anywhere}\n"
	".jobs .id{font-family:ui-monospace,monospace;font-size:.85rem}\n"
	"progress{width:14rem;vertical-align:middle;margin:0 .5rem}\n"
	".error{color:var(--bad)}\n"
	".empty{color:var(--muted)}\n";

/* Served only: progress of the jobs in progress over their event streams
 * (a page reload when one ends, to show its images), and Redo. */
static const char gallery_js[] =
	"(function(){\n"
	"'use strict';\n"
	"function follow(li){\n"
	"  var id=li.getAttribute('data-job');\n"
	"  var bar=li.querySelector('progress'),text=li.querySelector('.state');\n"
	"  var es=new EventSource('/v1/jobs/'+encodeURIComponent(id)+'/stream');\n"
	"  es.onmessage=function(e){\n"
	"    var m=/^Step (\\d+)\\/(\\d+)/.exec(e.data);\n"
	"    if(m){bar.max=+m[2];bar.value=+m[1];text.textContent='step '+m[1]+'/'+m[2];return;}\n"
	"    if(e.data.charAt(0)==='{'){es.close();text.textContent='finished';\n"
	"      setTimeout(function(){location.reload();},500);return;}\n"
	"    text.textContent=e.data;\n"
	"  };\n"
	"}\n"
	"var jobs=document.querySelectorAll('li.active[data-job]');\n"
	"for(var i=0;i<jobs.length;i++)follow(jobs[i]);\n"
	"var buttons=document.querySelectorAll('button.redo-button');\n"
	"for(var k=0;k<buttons.length;k++)buttons[k].addEventListener('click',function(ev){\n"
	"  var btn=ev.currentTarget,st=btn.nextElementSibling;\n"
	"  btn.disabled=true;st.textContent='submitting';\n"
	"  fetch('/v1/jobs',{method:'POST',headers:{'Content-Type':'application/json'},\n"
	"    body:btn.getAttribute('data-job')}).then(function(r){return r.json().then(\n"
	"    function(j){if(!r.ok)throw new Error(j.error&&j.error.message||r.status);\n"
	"    st.textContent='queued as '+j.job_id;setTimeout(function(){location.reload();},800);});})\n"
	"    .catch(function(e){st.textContent=String(e.message||e);btn.disabled=false;});\n"
	"});\n"
	"if(!jobs.length)setTimeout(function(){location.reload();},30000);\n"
	"})();\n";

static void
active_job(struct sbuf *b, const struct spool_entry *e, int live)
{
	const json_t *p = e->progress;
	const char *ev = jstr(p, "event");
	char step[32], steps[32], image[32], images[32];

	jnum(p, "step", step, sizeof step);
	jnum(p, "steps", steps, sizeof steps);
	jnum(p, "image", image, sizeof image);
	jnum(p, "images", images, sizeof images);
	sb_printf(b, "<li class=\"active %s\" data-job=\"%s\"><span class=\"id\">%s</span> ",
	    e->state == SPOOL_RUNNING ? "running" : "queued", e->id, e->id);
	sb_printf(b, "<progress max=\"%s\" value=\"%s\"></progress><span class=\"state\">",
	    steps[0] ? steps : "1", step[0] ? step : "0");
	if (e->state == SPOOL_QUEUED)
		sb_puts(b, "queued");
	else if (ev != NULL && strcmp(ev, "step") == 0) {
		sb_printf(b, "step %s/%s", step, steps);
		if (images[0] != '\0' && strcmp(images, "1") != 0)
			sb_printf(b, ", image %d/%s", atoi(image) + 1, images);
	} else
		sb_html(b, ev ? ev : "running");
	sb_puts(b, "</span>");
	(void)live;
	sb_puts(b, "</li>\n");
}

static void
failed_job(struct sbuf *b, const struct spool_entry *e)
{
	const json_t *err = json_object_get(e->record, "error");
	const json_t *params = json_object_get(e->record, "parameters");
	const char *status = jstr(e->record, "status"), *msg = jstr(err, "message");
	const char *prompt = jstr(params, "prompt");

	sb_printf(b, "<li class=\"failed\" data-job=\"%s\"><span class=\"id\">%s</span> "
	    "<b>", e->id, e->id);
	sb_html(b, status ? status : "failed");
	sb_puts(b, "</b>");
	if (prompt != NULL) {
		sb_puts(b, " <span class=\"prompt\">");
		sb_html(b, prompt);
		sb_puts(b, "</span>");
	}
	sb_puts(b, "<br><span class=\"error\">");
	sb_html(b, msg ? msg : "no error message recorded");
	sb_puts(b, "</span></li>\n");
}

/* The images of the done jobs of the listing, newest first (*n of them;
 * borrowed from e). */
static struct image_ref *
collect_images(const struct spool_entry *e, int n, size_t *nrefs)
{
	struct image_ref *refs = NULL;
	size_t cap = 0;
	int k;

	*nrefs = 0;
	for (k = 0; k < n; k++) {
		const json_t *imgs;
		size_t j;
		if (e[k].state != SPOOL_DONE || e[k].record == NULL)
			continue;
		imgs = json_object_get(e[k].record, "images");
		for (j = 0; j < json_array_size(imgs); j++) {
			struct image_ref *r;
			if (*nrefs == cap) {
				size_t nc = cap ? cap * 2 : 64;
				struct image_ref *nr = realloc(refs, nc * sizeof *nr);
				if (nr == NULL)
					goto out;
				refs = nr;
				cap = nc;
			}
			r = &refs[(*nrefs)++];
			r->record = e[k].record;
			r->image = json_array_get(imgs, j);
			r->id = e[k].id;
			r->finished = jstr(e[k].record, "finished");
			r->index = (int)j;
			r->time = e[k].mtime;
		}
	}
out:
	if (*nrefs > 1)
		qsort(refs, *nrefs, sizeof *refs, by_time_desc);
	return refs;
}

/* The page of the listing e (n entries; reordered). */
static char *
render(struct spool_entry *e, int n, const struct gallery_options *o,
    size_t *len, struct sd_error *err)
{
	struct image_ref *refs = NULL;
	struct sbuf b = { NULL, 0, 0, 0 };
	size_t nrefs = 0, i;
	int k, nactive = 0, nfailed = 0, shown;
	char when[40];

	for (k = 0; k < n; k++) {
		if (e[k].state == SPOOL_QUEUED || e[k].state == SPOOL_RUNNING)
			nactive++;
		if (e[k].state == SPOOL_FAILED)
			nfailed++;
	}
	refs = collect_images(e, n, &nrefs);
	util_rfc3339(util_now(), when, sizeof when);
	sb_puts(&b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
	    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
	    "<meta name=\"generator\" content=\"sdbatch " PACKAGE_VERSION "\">\n"
	    "<title>sdbatch gallery</title>\n<style>\n");
	sb_puts(&b, gallery_css);
	sb_puts(&b, "</style>\n</head>\n<body>\n<header><h1>sdbatch gallery</h1><p>");
	shown = nrefs < (size_t)o->max_images ? (int)nrefs : o->max_images;
	sb_printf(&b, "<span class=\"count\">%d image%s</span>", shown,
	    shown == 1 ? "" : "s");
	if (nrefs > (size_t)shown)
		sb_printf(&b, " (the newest of %zu)", nrefs);
	sb_printf(&b, ", %d in progress, %d failed &middot; ", nactive, nfailed);
	sb_printf(&b, "<time datetime=\"%s\">%s</time></p></header>\n<main>\n", when, when);
	if (nactive > 0) {
		sb_puts(&b, "<section id=\"active\"><h2>In progress</h2>\n<ul class=\"jobs\">\n");
		for (k = 0; k < n; k++)
			if (e[k].state == SPOOL_RUNNING)
				active_job(&b, &e[k], o->live);
		for (k = 0; k < n; k++)
			if (e[k].state == SPOOL_QUEUED)
				active_job(&b, &e[k], o->live);
		sb_puts(&b, "</ul></section>\n");
	}
	sb_puts(&b, "<section id=\"images\"><h2>Images</h2>\n");
	if (shown == 0)
		sb_puts(&b, "<p class=\"empty\">No images yet.</p>\n");
	else {
		sb_puts(&b, "<div class=\"grid\">\n");
		for (i = 0; i < (size_t)shown; i++)
			card(&b, &refs[i], o->live);
		sb_puts(&b, "</div>\n");
	}
	sb_puts(&b, "</section>\n");
	if (nfailed > 0) {
		qsort(e, (size_t)n, sizeof *e, by_mtime_desc);
		sb_puts(&b, "<section id=\"failed\"><h2>Failed</h2>\n<ul class=\"jobs\">\n");
		for (k = 0, shown = 0; k < n && shown < o->max_images; k++)
			if (e[k].state == SPOOL_FAILED) {
				failed_job(&b, &e[k]);
				shown++;
			}
		sb_puts(&b, "</ul></section>\n");
	}
	sb_puts(&b, "</main>\n");
	if (o->live) {
		sb_puts(&b, "<script>\n");
		sb_puts(&b, gallery_js);
		sb_puts(&b, "</script>\n");
	}
	sb_puts(&b, "</body>\n</html>\n");
	free(refs);
	if (b.failed || b.s == NULL) {
		free(b.s);
		sd_fail(err, SD_EINTERNAL, "out of memory");
		return NULL;
	}
	*len = b.n;
	return b.s;
}

char *
gallery_html(struct spool *s, const struct sd_config *cfg,
    const struct gallery_options *o, size_t *len, struct sd_error *err)
{
	struct spool_entry *e = NULL;
	char *html;
	int n;

	(void)cfg;
	if ((n = spool_list(s, NULL, &e, err)) < 0)
		return NULL;
	html = render(e, n, o, len, err);
	spool_list_free(e, n);
	return html;
}

/* Copy the open file in to dir/name through a temporary name. */
static int
copy_into(int in, const char *dir, const char *name, struct sd_error *err)
{
	char *path = util_printf("%s/%s", dir, name), *data = NULL;
	size_t n = 0, cap = 0;
	ssize_t r;
	int rc = -1;

	if (path == NULL)
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	for (;;) {
		if (n == cap) {
			char *nd = realloc(data, cap ? cap * 2 : 65536);
			if (nd == NULL) {
				sd_fail(err, SD_EINTERNAL, "out of memory");
				goto out;
			}
			data = nd;
			cap = cap ? cap * 2 : 65536;
		}
		r = read(in, data + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			sd_fail(err, SD_EIO, "reading an image: %s", strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	rc = util_write_atomic(path, NULL, data, n, 0644, err);
out:
	free(data);
	free(path);
	return rc;
}

int
gallery_write(struct spool *s, const struct sd_config *cfg, const char *dir,
    int max_images, int *nimages, struct sd_error *err)
{
	struct gallery_options o = { max_images, 0 };
	struct spool_entry *e = NULL;
	struct image_ref *refs;
	char *html, *images, *thumbs = NULL, *index;
	size_t len, nrefs, i;
	int n, count = 0;

	if (util_mkdirs(dir, err) < 0)
		return -1;
	if ((images = util_join(dir, "images")) == NULL)
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	if (util_mkdirs(images, err) < 0) {
		free(images);
		return -1;
	}
	if ((thumbs = util_join(dir, "thumbs")) == NULL || util_mkdirs(thumbs, err) < 0) {
		if (thumbs == NULL)
			sd_fail(err, SD_EINTERNAL, "out of memory");
		free(images);
		free(thumbs);
		return -1;
	}
	/* The images first, so that the page never links a missing one. */
	if ((n = spool_list(s, NULL, &e, err)) < 0) {
		free(images);
		return -1;
	}
	refs = collect_images(e, n, &nrefs);
	for (i = 0; i < nrefs && count < max_images; i++) {
		const char *p = jstr(refs[i].image, "path");
		char name[200], *src = NULL, *dst;
		long long size;
		struct sd_error e2;
		int fd;

		snprintf(name, sizeof name, "%s-%d.png", refs[i].id, refs[i].index);
		count++;
		sd_error_clear(&e2);
		if ((fd = gallery_open_image(s, cfg, p, &size, &e2)) < 0) {
			fprintf(stderr, "sdbatch gallery: job %s image %d: %s\n",
			    refs[i].id, refs[i].index, e2.message);
			continue;
		}
		/* A hard link where possible (same file system), else a
		 * copy. */
		src = util_printf("/proc/self/fd/%d", fd);
		dst = util_join(images, name);
		if (src != NULL && dst != NULL) {
			unlink(dst);
			if (linkat(AT_FDCWD, src, AT_FDCWD, dst, AT_SYMLINK_FOLLOW) < 0 &&
			    copy_into(fd, images, name, &e2) < 0)
				fprintf(stderr, "sdbatch gallery: %s: %s\n", name,
				    e2.message);
		}
		free(src);
		free(dst);
		/* The thumbnail, unless an earlier run made it (images do not
		 * change). */
		if ((dst = util_join(thumbs, name)) != NULL && access(dst, F_OK) != 0) {
			unsigned char *png = NULL;
			size_t plen = 0;
			if (lseek(fd, 0, SEEK_SET) < 0 ||
			    gallery_thumbnail(fd, GALLERY_THUMB, &png, &plen, &e2) < 0 ||
			    util_write_atomic(dst, NULL, png, plen, 0644, &e2) < 0)
				fprintf(stderr, "sdbatch gallery: thumbnail of %s: %s\n",
				    name, e2.message);
			free(png);
		}
		free(dst);
		close(fd);
	}
	free(refs);
	free(images);
	free(thumbs);
	/* The page of the same listing: every image it shows is there. */
	html = render(e, n, &o, &len, err);
	spool_list_free(e, n);
	if (html == NULL)
		return -1;
	if ((index = util_join(dir, "index.html")) == NULL) {
		free(html);
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	}
	n = util_write_atomic(index, NULL, html, len, 0644, err);
	free(index);
	free(html);
	if (nimages != NULL)
		*nimages = count;
	return n;
}
