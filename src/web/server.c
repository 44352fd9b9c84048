/* server.c: `sdbatch serve` on libmicrohttpd. */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "spool/job.h"
#include "spool/spool.h"
#include "spool/submit.h"
#include "spool/util.h"
#include "web/gallery.h"
#include "web/server.h"

#define STREAM_POLL_S 0.1	/* how often a stream looks at its log */
#define STREAM_KEEPALIVE_S 15	/* a comment line when nothing happened */
#define IMAGE_MAX (256LL << 20)	/* an image sent as base64 in a stream */
/* (numbers: their names changed between libmicrohttpd versions) */
#define HTTP_TOO_LARGE 413
#define HTTP_UNPROCESSABLE 422

struct web_server {
	struct MHD_Daemon *daemon;
	struct spool spool;
	const struct sd_config *cfg;
	unsigned char token_hash[32];	/* SHA-256 of the token */
	int has_token;
	int loopback;		/* listening on a loopback address */
	int verbose;
	volatile int stopping;
	char url[128];
};

/* The state of one request. */
struct request {
	char *body;
	size_t len, cap;
	int too_large;
	int answered;		/* a response was queued before the body */
};

static void
sha256(const void *data, size_t len, unsigned char out[32])
{
	unsigned int n = 32;

	EVP_Digest(data, len, out, &n, EVP_sha256(), NULL);
}

/* ---------------------------------------------------------------- responses */

static void
common_headers(struct web_server *w, struct MHD_Connection *c,
    struct MHD_Response *r)
{
	const char *cors = w->cfg->serve.cors_origin;

	MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
	MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
	if (cors != NULL) {
		const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
		    "Origin");
		if (strcmp(cors, "*") == 0)
			MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
		else if (origin != NULL && strcmp(origin, cors) == 0) {
			MHD_add_response_header(r, "Access-Control-Allow-Origin", cors);
			MHD_add_response_header(r, "Vary", "Origin");
		}
	}
}

static void
log_request(struct web_server *w, struct MHD_Connection *c, const char *method,
    const char *url, unsigned status)
{
	const union MHD_ConnectionInfo *ci;
	char addr[INET6_ADDRSTRLEN] = "?";

	if (!w->verbose)
		return;
	ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (ci != NULL && ci->client_addr != NULL) {
		const struct sockaddr *sa = ci->client_addr;
		if (sa->sa_family == AF_INET)
			inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr,
			    addr, sizeof addr);
		else if (sa->sa_family == AF_INET6)
			inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr,
			    addr, sizeof addr);
	}
	fprintf(stderr, "sdbatch serve: %s %s %.200s %u\n", addr, method, url, status);
}

static enum MHD_Result
send_buffer(struct web_server *w, struct MHD_Connection *c, const char *method,
    const char *url, unsigned status, const char *type, char *data, size_t len)
{
	struct MHD_Response *r;
	enum MHD_Result ret;

	r = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
	if (r == NULL) {
		free(data);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", type);
	MHD_add_response_header(r, "Cache-Control", "no-store");
	common_headers(w, c, r);
	if (status == MHD_HTTP_UNAUTHORIZED)
		MHD_add_response_header(r, "WWW-Authenticate", "Bearer realm=\"sdbatch\"");
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(r, "Allow", strstr(url, "/images/") ||
		    strstr(url, "/stream") || strcmp(url, "/") == 0 ||
		    strcmp(url, "/healthz") == 0 ? "GET" :
		    strcmp(url, "/v1/jobs") == 0 ? "GET, POST" : "GET, DELETE");
	ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	log_request(w, c, method, url, status);
	return ret;
}

static enum MHD_Result
send_json(struct web_server *w, struct MHD_Connection *c, const char *method,
    const char *url, unsigned status, json_t *body)
{
	char *text = json_dumps(body, SD_JSON_FILE);
	size_t len;

	json_decref(body);
	if (text == NULL)
		return MHD_NO;
	len = strlen(text);
	/* a final newline, for people reading it with curl */
	{
		char *t2 = realloc(text, len + 2);
		if (t2 == NULL) {
			free(text);
			return MHD_NO;
		}
		text = t2;
		text[len++] = '\n';
		text[len] = '\0';
	}
	return send_buffer(w, c, method, url, status, "application/json", text, len);
}

/* {"error": {"status": N, "message": "...", "field": "..."}} */
static enum MHD_Result
send_error(struct web_server *w, struct MHD_Connection *c, const char *method,
    const char *url, unsigned status, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

static enum MHD_Result
send_error(struct web_server *w, struct MHD_Connection *c, const char *method,
    const char *url, unsigned status, const char *field, const char *fmt, ...)
{
	char msg[SD_ERROR_MAX + 64];
	json_t *e;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	e = json_pack("{s:i, s:s}", "status", (int)status, "message", msg);
	if (e != NULL && field != NULL && field[0] != '\0')
		json_object_set_new(e, "field", json_string(field));
	return send_json(w, c, method, url, status, json_pack("{s:o}", "error", e));
}

/* ---------------------------------------------------------------- checks */

static int
authorized(struct web_server *w, struct MHD_Connection *c)
{
	const char *h;
	unsigned char got[32];

	if (!w->has_token)
		return 1;
	h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
	if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
		return 0;
	h += 7;
	while (*h == ' ')
		h++;
	/* Hashes of equal length compared in constant time: neither the
	 * token's bytes nor its length show in the time taken. */
	sha256(h, strlen(h), got);
	return CRYPTO_memcmp(got, w->token_hash, 32) == 0;
}

/* Without a token on a loopback address, only requests that name a
 * loopback host: a web page elsewhere cannot reach the API by DNS
 * rebinding. */
static int
host_ok(struct web_server *w, struct MHD_Connection *c)
{
	const char *h;
	size_t n;

	if (w->has_token || !w->loopback)
		return 1;
	h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host");
	if (h == NULL)
		return 1;	/* HTTP/1.0 */
	if (strncmp(h, "[::1]", 5) == 0)
		n = 5;
	else if (strncasecmp(h, "localhost", 9) == 0)
		n = 9;
	else if (strncmp(h, "127.", 4) == 0)
		n = 4 + strspn(h + 4, "0123456789.");
	else
		return 0;
	return h[n] == '\0' || (h[n] == ':' && strspn(h + n + 1, "0123456789") ==
	    strlen(h + n + 1));
}

/* ---------------------------------------------------------------- POST /v1/jobs */

/* Names the {"operation": ...} shape may use for job fields. */
static const struct { const char *alias, *field; } aliases[] = {
	{ "cfg_scale", "guidance_scale" },
	{ "num_inference_steps", "steps" },
	{ "num_images", "count" },
};

/* The job document of the {"operation": {"type": "SDGenerate", ...}}
 * shape: the operation's fields (type removed, aliases renamed). */
static json_t *
map_operation(json_t *body, char *field, size_t fsize, char *why, size_t wsize)
{
	json_t *op = json_object_get(body, "operation"), *job, *v;
	const char *k, *type;
	size_t i;

	if (json_object_size(body) != 1) {
		json_object_foreach(body, k, v) {
			if (strcmp(k, "operation") != 0) {
				snprintf(field, fsize, "%.100s", k);
				snprintf(why, wsize, "%.100s: unknown field beside "
				    "\"operation\"", k);
				return NULL;
			}
		}
	}
	if (!json_is_object(op)) {
		snprintf(field, fsize, "operation");
		snprintf(why, wsize, "operation: must be an object");
		return NULL;
	}
	type = json_string_value(json_object_get(op, "type"));
	if (type == NULL || strcmp(type, "SDGenerate") != 0) {
		snprintf(field, fsize, "operation.type");
		snprintf(why, wsize, "operation.type: %s (known: SDGenerate)",
		    type == NULL ? "missing or not a string" : "unknown operation type");
		return NULL;
	}
	if ((job = json_object()) == NULL)
		return NULL;
	json_object_foreach(op, k, v) {
		const char *name = k;
		if (strcmp(k, "type") == 0)
			continue;
		for (i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
			if (strcmp(k, aliases[i].alias) == 0)
				name = aliases[i].field;
		if (json_object_get(job, name) != NULL) {
			snprintf(field, fsize, "operation.%.100s", k);
			snprintf(why, wsize, "operation.%.100s: %s is given twice", k, name);
			json_decref(job);
			return NULL;
		}
		json_object_set(job, name, v);
	}
	return job;
}

static enum MHD_Result
post_job(struct web_server *w, struct MHD_Connection *c, const char *url,
    struct request *rq)
{
	const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
	    "Content-Type");
	struct submit_request sr;
	struct sd_error err;
	json_error_t jerr;
	json_t *body = NULL, *job = NULL;
	char id[JOB_ID_MAX + 1], field[160] = "", why[400] = "", *text = NULL;
	int yaml = 0, op = 0, line = 0;
	enum MHD_Result ret;

	if (ct != NULL && (strncasecmp(ct, "application/yaml", 16) == 0 ||
	    strncasecmp(ct, "application/x-yaml", 18) == 0))
		yaml = 1;
	else if (ct == NULL || strncasecmp(ct, "application/json", 16) != 0 ||
	    (ct[16] != '\0' && ct[16] != ';' && ct[16] != ' '))
		return send_error(w, c, "POST", url, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE,
		    "Content-Type", "a job is sent as application/json (or "
		    "application/yaml)");
	if (rq->len == 0)
		return send_error(w, c, "POST", url, MHD_HTTP_BAD_REQUEST, "body",
		    "the request has no body: send a job");
	memset(&sr, 0, sizeof sr);
	if (yaml) {
		sr.data = rq->body;
		sr.len = rq->len;
	} else {
		body = json_loadb(rq->body, rq->len, JSON_REJECT_DUPLICATES, &jerr);
		if (body == NULL)
			return send_error(w, c, "POST", url, MHD_HTTP_BAD_REQUEST, "body",
			    "malformed JSON at line %d, column %d: %s", jerr.line,
			    jerr.column, jerr.text);
		if (!json_is_object(body)) {
			json_decref(body);
			return send_error(w, c, "POST", url, MHD_HTTP_BAD_REQUEST, "body",
			    "a job is a JSON object of fields ({\"prompt\": ...})");
		}
		if (json_object_get(body, "operation") != NULL) {
			op = 1;
			job = map_operation(body, field, sizeof field, why, sizeof why);
			if (job == NULL) {
				json_decref(body);
				return send_error(w, c, "POST", url,
				    HTTP_UNPROCESSABLE, field, "%s",
				    why[0] ? why : "out of memory");
			}
		} else
			job = json_incref(body);
		json_decref(body);
		/* The job file is JSON text, which YAML reads as it is. */
		text = json_dumps(job, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		json_decref(job);
		if (text == NULL)
			return send_error(w, c, "POST", url, MHD_HTTP_INTERNAL_SERVER_ERROR,
			    NULL, "out of memory");
		sr.data = text;
		sr.len = strlen(text);
	}
	sr.name = "request";
	sr.dir = w->spool.incoming;
	sr.id = NULL;
	sr.absolute_paths = 0;
	sd_error_clear(&err);
	if (spool_submit_job(&w->spool, w->cfg, &sr, id, &err, &line) < 0) {
		unsigned st = err.code == SD_EDATA || err.code == SD_ENOINPUT ?
		    HTTP_UNPROCESSABLE : MHD_HTTP_INTERNAL_SERVER_ERROR;
		if (err.field[0] != '\0' && op)
			snprintf(field, sizeof field, "operation.%.140s", err.field);
		else
			snprintf(field, sizeof field, "%.140s", err.field);
		free(text);
		return send_error(w, c, "POST", url, st, field, "%s", err.message);
	}
	free(text);
	{
		char *stream = util_printf("/v1/jobs/%s/stream", id);
		char *status = util_printf("/v1/jobs/%s", id);
		json_t *res = json_pack("{s:s, s:s, s:s}", "job_id", id,
		    "stream_url", stream ? stream : "", "status_url", status ? status : "");
		char *t = res ? json_dumps(res, SD_JSON_FILE) : NULL;
		struct MHD_Response *r;
		json_decref(res);
		free(stream);
		if (t == NULL) {
			free(status);
			return MHD_NO;
		}
		{
			size_t n = strlen(t);
			char *t2 = realloc(t, n + 2);
			if (t2 != NULL) {
				t = t2;
				t[n] = '\n';
				t[n + 1] = '\0';
			}
		}
		r = MHD_create_response_from_buffer(strlen(t), t, MHD_RESPMEM_MUST_FREE);
		if (r == NULL) {
			free(t);
			free(status);
			return MHD_NO;
		}
		MHD_add_response_header(r, "Content-Type", "application/json");
		MHD_add_response_header(r, "Cache-Control", "no-store");
		if (status != NULL)
			MHD_add_response_header(r, "Location", status);
		common_headers(w, c, r);
		ret = MHD_queue_response(c, MHD_HTTP_ACCEPTED, r);
		MHD_destroy_response(r);
		free(status);
		log_request(w, c, "POST", url, MHD_HTTP_ACCEPTED);
		return ret;
	}
}

/* ---------------------------------------------------------------- jobs */

static const char *
status_name(enum spool_state st, const json_t *record)
{
	const char *s = json_string_value(json_object_get(record, "status"));

	if ((st == SPOOL_DONE || st == SPOOL_FAILED) && s != NULL)
		return s;
	return spool_state_name(st);
}

/* The record's images with their URLs (and PNGs as base64 when asked). */
static void
add_image_urls(struct web_server *w, const char *id, json_t *record, int base64)
{
	json_t *imgs = json_object_get(record, "images"), *img;
	size_t i;

	json_array_foreach(imgs, i, img) {
		char *u;
		if (!json_is_object(img))
			continue;
		u = util_printf("/v1/jobs/%s/images/%zu.png", id, i);
		if (u != NULL)
			json_object_set_new(img, "url", json_string(u));
		free(u);
		if (base64) {
			struct sd_error err;
			long long size;
			int fd = gallery_open_image(&w->spool, w->cfg,
			    json_string_value(json_object_get(img, "path")), &size, &err);
			if (fd >= 0 && size <= IMAGE_MAX) {
				char *data = malloc((size_t)size + 1), *b64;
				size_t got = 0;
				ssize_t r = 0;
				while (data != NULL && got < (size_t)size &&
				    ((r = read(fd, data + got, (size_t)size - got)) > 0 ||
				    (r < 0 && errno == EINTR)))
					if (r > 0)
						got += (size_t)r;
				if (data != NULL && got == (size_t)size &&
				    (b64 = util_base64_encode(data, got)) != NULL) {
					json_object_set_new(img, "png_base64", json_string(b64));
					free(b64);
				}
				free(data);
			}
			if (fd >= 0)
				close(fd);
		}
	}
}

static enum MHD_Result
get_job(struct web_server *w, struct MHD_Connection *c, const char *url,
    const char *id)
{
	struct spool_entry *e = NULL;
	struct sd_error err;
	json_t *res, *rec = NULL;
	char *stream;
	int n;

	sd_error_clear(&err);
	if ((n = spool_list(&w->spool, id, &e, &err)) < 0)
		return send_error(w, c, "GET", url, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL,
		    "%s", err.message);
	if (n == 0) {
		spool_list_free(e, n);
		return send_error(w, c, "GET", url, MHD_HTTP_NOT_FOUND, "id",
		    "no job %s", id);
	}
	if (e[0].state == SPOOL_DONE || e[0].state == SPOOL_FAILED) {
		rec = gallery_read_record(&w->spool, id);
		if (rec != NULL)
			add_image_urls(w, id, rec, 0);
	}
	stream = util_printf("/v1/jobs/%s/stream", id);
	res = json_pack("{s:s, s:s, s:s?}", "job_id", id, "status",
	    status_name(e[0].state, rec), "stream_url", stream);
	free(stream);
	if (res != NULL && e[0].progress != NULL)
		json_object_set(res, "progress", e[0].progress);
	if (res != NULL && rec != NULL)
		json_object_set_new(res, "record", rec);
	else
		json_decref(rec);
	spool_list_free(e, n);
	if (res == NULL)
		return MHD_NO;
	return send_json(w, c, "GET", url, MHD_HTTP_OK, res);
}

static enum MHD_Result
list_jobs(struct web_server *w, struct MHD_Connection *c, const char *url)
{
	struct spool_entry *e = NULL;
	struct sd_error err;
	json_t *arr = json_array();
	int n, i;

	sd_error_clear(&err);
	if ((n = spool_list(&w->spool, NULL, &e, &err)) < 0) {
		json_decref(arr);
		return send_error(w, c, "GET", url, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL,
		    "%s", err.message);
	}
	for (i = 0; i < n && arr != NULL; i++)
		json_array_append_new(arr, json_pack("{s:s, s:s}", "job_id", e[i].id,
		    "status", status_name(e[i].state, e[i].record)));
	spool_list_free(e, n);
	return send_json(w, c, "GET", url, MHD_HTTP_OK, json_pack("{s:o}", "jobs", arr));
}

static enum MHD_Result
cancel_job(struct web_server *w, struct MHD_Connection *c, const char *url,
    const char *id)
{
	struct sd_error err;
	enum spool_state st;

	sd_error_clear(&err);
	if (spool_cancel(&w->spool, id, &st, &err) < 0) {
		if (err.code == SD_ENOINPUT)
			return send_error(w, c, "DELETE", url, MHD_HTTP_NOT_FOUND, "id",
			    "no job %s", id);
		if (err.code == SD_EDATA)
			return send_error(w, c, "DELETE", url, MHD_HTTP_CONFLICT, "id",
			    "%s", err.message);
		return send_error(w, c, "DELETE", url, MHD_HTTP_SERVICE_UNAVAILABLE,
		    NULL, "%s", err.message);
	}
	return send_json(w, c, "DELETE", url, MHD_HTTP_ACCEPTED, json_pack("{s:s, s:s}",
	    "job_id", id, "status", st == SPOOL_QUEUED ? "cancelled" : "cancelling"));
}

static enum MHD_Result
get_image(struct web_server *w, struct MHD_Connection *c, const char *url,
    const char *id, const char *file)
{
	struct MHD_Response *r;
	struct sd_error err;
	json_t *rec, *img;
	size_t digits = strspn(file, "0123456789");
	long long size;
	enum MHD_Result ret;
	int fd;
	unsigned long idx;
	const char *sizearg = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND,
	    "size");
	long thumb = 0;

	if (digits == 0 || digits > 4 || strcmp(file + digits, ".png") != 0 ||
	    (digits > 1 && file[0] == '0'))
		return send_error(w, c, "GET", url, MHD_HTTP_BAD_REQUEST, "image",
		    "an image is N.png, N its index from 0");
	idx = strtoul(file, NULL, 10);
	if (sizearg != NULL) {
		if (sizearg[0] == '\0' || strlen(sizearg) > 4 ||
		    strspn(sizearg, "0123456789") != strlen(sizearg) ||
		    (thumb = strtol(sizearg, NULL, 10)) < 16 || thumb > 2048)
			return send_error(w, c, "GET", url, MHD_HTTP_BAD_REQUEST, "size",
			    "size is the longer side of a thumbnail, 16 to 2048 pixels");
	}
	if ((rec = gallery_read_record(&w->spool, id)) == NULL)
		return send_error(w, c, "GET", url, MHD_HTTP_NOT_FOUND, "id",
		    "no finished job %s", id);
	img = json_array_get(json_object_get(rec, "images"), idx);
	if (img == NULL) {
		json_decref(rec);
		return send_error(w, c, "GET", url, MHD_HTTP_NOT_FOUND, "image",
		    "job %s has no image %lu", id, idx);
	}
	sd_error_clear(&err);
	fd = gallery_open_image(&w->spool, w->cfg,
	    json_string_value(json_object_get(img, "path")), &size, &err);
	json_decref(rec);
	if (fd < 0)
		return send_error(w, c, "GET", url, err.code == SD_ENOINPUT ?
		    MHD_HTTP_GONE : MHD_HTTP_FORBIDDEN, "image", "image %lu of job %s: %s",
		    idx, id, err.message);
	if (thumb > 0) {
		unsigned char *png = NULL;
		size_t plen = 0;
		int rc = gallery_thumbnail(fd, (int)thumb, &png, &plen, &err);
		close(fd);
		if (rc < 0)
			return send_error(w, c, "GET", url, MHD_HTTP_INTERNAL_SERVER_ERROR,
			    "image", "image %lu of job %s: %s", idx, id, err.message);
		r = MHD_create_response_from_buffer(plen, png, MHD_RESPMEM_MUST_FREE);
		if (r == NULL) {
			free(png);
			return MHD_NO;
		}
	} else if ((r = MHD_create_response_from_fd64((uint64_t)size, fd)) == NULL) {
		close(fd);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", "image/png");
	MHD_add_response_header(r, "Cache-Control", "private, max-age=3600");
	common_headers(w, c, r);
	ret = MHD_queue_response(c, MHD_HTTP_OK, r);
	MHD_destroy_response(r);
	log_request(w, c, "GET", url, MHD_HTTP_OK);
	return ret;
}

/* ---------------------------------------------------------------- streams */

struct stream {
	struct web_server *w;
	int fd;			/* the client's socket, to notice it leaving */
	char id[JOB_ID_MAX + 1];
	char *log_path;
	uint64_t offset;	/* the next byte of the log to read */
	char *out;		/* bytes waiting to be sent */
	size_t out_len, out_pos;
	int finished;		/* the last event is in out */
	int saw_end;		/* the log's done, failed or cancelled line was read */
	int include_images;
	double last_sent;
	double end_wait;	/* when the job was seen finished without a record */
};

static void
stream_free(void *cls)
{
	struct stream *s = cls;

	free(s->log_path);
	free(s->out);
	free(s);
}

static void
out_add(struct stream *s, const char *text)
{
	size_t n = strlen(text);
	char *no;

	if (s->out_pos > 0 && s->out_pos == s->out_len)
		s->out_pos = s->out_len = 0;
	if ((no = realloc(s->out, s->out_len + n + 1)) == NULL)
		return;
	s->out = no;
	memcpy(s->out + s->out_len, text, n + 1);
	s->out_len += n;
}

/* One event: "id: N" (when id is not NULL) and data lines. */
static void
event(struct stream *s, const char *id, const char *data)
{
	char *t;
	const char *p;

	if (id != NULL) {
		t = util_printf("id: %s\n", id);
		if (t != NULL)
			out_add(s, t);
		free(t);
	}
	/* One data line a line of text: no line break inside. */
	for (p = data;;) {
		size_t n = strcspn(p, "\r\n");
		t = util_printf("data: %.*s\n", (int)n, p);
		if (t != NULL)
			out_add(s, t);
		free(t);
		p += n;
		if (*p == '\0')
			break;
		p += *p == '\r' && p[1] == '\n' ? 2 : 1;
	}
	out_add(s, "\n");
}

/* The text of a progress line ("Step 5/20"); NULL for the events that end
 * a job (the result event replaces them). */
static char *
event_text(const json_t *e)
{
	const char *ev = json_string_value(json_object_get(e, "event"));
	const char *error = json_string_value(json_object_get(e, "error"));
	json_int_t step = json_integer_value(json_object_get(e, "step"));
	json_int_t steps = json_integer_value(json_object_get(e, "steps"));
	json_int_t image = json_integer_value(json_object_get(e, "image"));
	json_int_t images = json_integer_value(json_object_get(e, "images"));

	if (ev == NULL)
		return NULL;
	if (strcmp(ev, "done") == 0 || strcmp(ev, "failed") == 0 ||
	    strcmp(ev, "cancelled") == 0)
		return NULL;
	if (strcmp(ev, "step") == 0) {
		if (images > 1)
			return util_printf("Step %" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT
			    " (image %" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT ")",
			    step, steps, image + 1, images);
		return util_printf("Step %" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT,
		    step, steps);
	}
	if (strcmp(ev, "warning") == 0) {
		/* a LoRA that matched in part, a prompt cut at 77 tokens */
		const char *msg = json_string_value(json_object_get(e, "message"));
		return util_printf("Warning: %s", msg ? msg : "(no message)");
	}
	if (strcmp(ev, "claimed") == 0)
		return strdup("Claimed by a worker");
	if (strcmp(ev, "loading") == 0)
		return strdup("Loading the model");
	if (strcmp(ev, "image") == 0)
		return util_printf("Image %" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT
		    " written", image + 1, images);
	if (strcmp(ev, "requeued") == 0)
		return util_printf("Requeued%s%s", error ? ": " : "", error ? error : "");
	return util_printf("%s", ev);
}

/* Read the complete lines of the log past s->offset into events.  Returns
 * the number of events added. */
static int
read_log(struct stream *s)
{
	char buf[65536];
	ssize_t n;
	int fd, added = 0;

	if ((fd = open(s->log_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)) < 0)
		return 0;
	for (;;) {
		char *line, *nl;
		n = pread(fd, buf, sizeof buf - 1, (off_t)s->offset);
		if (n <= 0)
			break;
		buf[n] = '\0';
		line = buf;
		while ((nl = memchr(line, '\n', (size_t)(buf + n - line))) != NULL) {
			json_t *e;
			char *text, idtext[32];
			*nl = '\0';
			s->offset += (uint64_t)(nl - line) + 1;
			e = json_loads(line, 0, NULL);
			text = e ? event_text(e) : NULL;
			{
				const char *ev = json_string_value(json_object_get(e, "event"));
				if (ev != NULL && (strcmp(ev, "done") == 0 ||
				    strcmp(ev, "failed") == 0 || strcmp(ev, "cancelled") == 0))
					s->saw_end = 1;
			}
			json_decref(e);
			if (text != NULL) {
				snprintf(idtext, sizeof idtext, "%" PRIu64, s->offset);
				event(s, idtext, text);
				free(text);
				added++;
			}
			line = nl + 1;
		}
		if (line == buf) {
			/* a line longer than the buffer: not a progress line */
			if (n == (ssize_t)sizeof buf - 1)
				s->offset += (uint64_t)n;
			break;
		}
	}
	close(fd);
	return added;
}

/* The last event: the result record (with image URLs, and the PNGs when
 * asked), or an error. */
static int
result_event(struct stream *s)
{
	enum spool_state st = spool_find(&s->w->spool, s->id, NULL);
	json_t *rec;
	char *text, idtext[32];

	if (st == SPOOL_QUEUED || st == SPOOL_RUNNING)
		return 0;
	snprintf(idtext, sizeof idtext, "%" PRIu64, s->offset);
	if (st == SPOOL_NONE) {
		event(s, idtext, "{\"status\":\"failed\",\"error\":{\"message\":"
		    "\"the job is no longer in the spool\"}}");
		return 1;
	}
	/* A worker writes the record, then the log's last line: wait a moment
	 * for both, so that every client's last event has the same id. */
	if (s->end_wait == 0)
		s->end_wait = util_now_mono();
	if (!s->saw_end && util_now_mono() - s->end_wait < 3)
		return 0;
	snprintf(idtext, sizeof idtext, "%" PRIu64, s->offset);
	if ((rec = gallery_read_record(&s->w->spool, s->id)) == NULL) {
		/* finished a moment ago: the record follows the rename */
		if (util_now_mono() - s->end_wait < 5)
			return 0;
		rec = spool_simple_record(s->id, "failed", SD_EIO,
		    "the job finished without a readable result record");
		if (rec == NULL)
			return 0;
	}
	json_object_set_new(rec, "job_id", json_string(s->id));
	add_image_urls(s->w, s->id, rec, s->include_images);
	text = json_dumps(rec, SD_JSON_LINE);
	json_decref(rec);
	if (text == NULL)
		return 0;
	event(s, idtext, text);
	free(text);
	return 1;
}

static ssize_t
stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct stream *s = cls;

	(void)pos;
	for (;;) {
		if (s->out_pos < s->out_len) {
			size_t n = s->out_len - s->out_pos;
			if (n > max)
				n = max;
			memcpy(buf, s->out + s->out_pos, n);
			s->out_pos += n;
			s->last_sent = util_now_mono();
			return (ssize_t)n;
		}
		if (s->finished || s->w->stopping)
			return MHD_CONTENT_READER_END_OF_STREAM;
		if (read_log(s) > 0)
			continue;
		if (result_event(s)) {
			s->finished = 1;
			continue;
		}
		if (s->fd >= 0) {
			struct pollfd p = { s->fd, POLLRDHUP, 0 };
			if (poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP |
			    POLLERR | POLLNVAL)))
				return MHD_CONTENT_READER_END_WITH_ERROR;
		}
		if (util_now_mono() - s->last_sent >= STREAM_KEEPALIVE_S) {
			out_add(s, ": keep-alive\n\n");
			continue;
		}
		util_sleep(STREAM_POLL_S, NULL, -1);
	}
}

static enum MHD_Result
get_stream(struct web_server *w, struct MHD_Connection *c, const char *url,
    const char *id)
{
	const char *last = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
	    "Last-Event-ID");
	const char *inc = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND,
	    "include_images");
	struct MHD_Response *r;
	struct stream *s;
	struct stat st;
	enum MHD_Result ret;

	if (last == NULL)
		last = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND,
		    "last_event_id");
	if (last != NULL && (last[0] == '\0' || strlen(last) > 19 ||
	    strspn(last, "0123456789") != strlen(last)))
		return send_error(w, c, "GET", url, MHD_HTTP_BAD_REQUEST,
		    "Last-Event-ID", "Last-Event-ID is the id of an event this "
		    "stream sent (a byte offset)");
	if (inc != NULL && strcmp(inc, "true") != 0 && strcmp(inc, "1") != 0 &&
	    strcmp(inc, "false") != 0 && strcmp(inc, "0") != 0)
		return send_error(w, c, "GET", url, MHD_HTTP_BAD_REQUEST,
		    "include_images", "include_images is true or false");
	if (spool_find(&w->spool, id, NULL) == SPOOL_NONE)
		return send_error(w, c, "GET", url, MHD_HTTP_NOT_FOUND, "id",
		    "no job %s", id);
	if ((s = calloc(1, sizeof *s)) == NULL)
		return MHD_NO;
	s->w = w;
	s->fd = -1;
	{
		const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c,
		    MHD_CONNECTION_INFO_CONNECTION_FD);
		if (ci != NULL)
			s->fd = ci->connect_fd;
	}
	snprintf(s->id, sizeof s->id, "%s", id);
	s->log_path = util_printf("%s/%s.jsonl", w->spool.logs, id);
	s->include_images = inc != NULL && (strcmp(inc, "true") == 0 ||
	    strcmp(inc, "1") == 0);
	if (last != NULL)
		s->offset = strtoull(last, NULL, 10);
	/* An offset past the log's end (a log cleaned away): from its end. */
	if (s->log_path != NULL && lstat(s->log_path, &st) == 0 &&
	    s->offset > (uint64_t)st.st_size)
		s->offset = (uint64_t)st.st_size;
	s->last_sent = util_now_mono();
	out_add(s, "retry: 2000\n\n");
	r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_read, s,
	    stream_free);
	if (r == NULL || s->log_path == NULL) {
		if (r != NULL)
			MHD_destroy_response(r);
		else
			stream_free(s);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", "text/event-stream; charset=utf-8");
	MHD_add_response_header(r, "Cache-Control", "no-cache");
	MHD_add_response_header(r, "X-Accel-Buffering", "no");
	common_headers(w, c, r);
	ret = MHD_queue_response(c, MHD_HTTP_OK, r);
	MHD_destroy_response(r);
	log_request(w, c, "GET", url, MHD_HTTP_OK);
	return ret;
}

/* ---------------------------------------------------------------- routing */

static enum MHD_Result
route(struct web_server *w, struct MHD_Connection *c, const char *url,
    const char *method, struct request *rq)
{
	int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
	char id[JOB_ID_MAX + 1];
	const char *rest;
	size_t n;

	if (strcmp(url, "/healthz") == 0) {
		if (!get)
			return send_error(w, c, method, url, MHD_HTTP_METHOD_NOT_ALLOWED,
			    NULL, "the health check is read with GET");
		return send_json(w, c, method, url, MHD_HTTP_OK,
		    json_pack("{s:s}", "status", "ok"));
	}
	if (strcmp(url, "/") == 0 || strcmp(url, "/index.html") == 0) {
		struct gallery_options o = { w->cfg->serve.gallery_images, 1 };
		struct sd_error err;
		size_t len;
		char *html;
		if (!get)
			return send_error(w, c, method, "/", MHD_HTTP_METHOD_NOT_ALLOWED,
			    NULL, "the gallery is read with GET");
		sd_error_clear(&err);
		if ((html = gallery_html(&w->spool, w->cfg, &o, &len, &err)) == NULL)
			return send_error(w, c, method, url, MHD_HTTP_INTERNAL_SERVER_ERROR,
			    NULL, "%s", err.message);
		return send_buffer(w, c, method, url, MHD_HTTP_OK,
		    "text/html; charset=utf-8", html, len);
	}
	if (strcmp(url, "/v1/jobs") == 0 || strcmp(url, "/v1/jobs/") == 0) {
		if (strcmp(method, "POST") == 0)
			return post_job(w, c, url, rq);
		if (get)
			return list_jobs(w, c, url);
		return send_error(w, c, method, "/v1/jobs", MHD_HTTP_METHOD_NOT_ALLOWED,
		    NULL, "%.20s is not allowed here (GET, POST)", method);
	}
	if (strncmp(url, "/v1/jobs/", 9) != 0)
		return send_error(w, c, method, url, MHD_HTTP_NOT_FOUND, NULL,
		    "no such resource");
	n = strcspn(url + 9, "/");
	rest = url + 9 + n;
	if (n == 0 || n > JOB_ID_MAX)
		return send_error(w, c, method, url, MHD_HTTP_BAD_REQUEST, "id",
		    "not a valid job id (1-128 characters: letters, digits, '.', '_', "
		    "'-', starting with a letter or digit)");
	memcpy(id, url + 9, n);
	id[n] = '\0';
	if (!util_valid_id(id))
		return send_error(w, c, method, url, MHD_HTTP_BAD_REQUEST, "id",
		    "not a valid job id (1-128 characters: letters, digits, '.', '_', "
		    "'-', starting with a letter or digit)");
	if (*rest == '\0') {
		if (get)
			return get_job(w, c, url, id);
		if (strcmp(method, "DELETE") == 0)
			return cancel_job(w, c, url, id);
		return send_error(w, c, method, url, MHD_HTTP_METHOD_NOT_ALLOWED, NULL,
		    "%.20s is not allowed here (GET, DELETE)", method);
	}
	if (strcmp(rest, "/stream") == 0) {
		if (!get)
			return send_error(w, c, method, url, MHD_HTTP_METHOD_NOT_ALLOWED,
			    NULL, "a stream is read with GET");
		return get_stream(w, c, url, id);
	}
	if (strncmp(rest, "/images/", 8) == 0) {
		if (!get)
			return send_error(w, c, method, url, MHD_HTTP_METHOD_NOT_ALLOWED,
			    NULL, "an image is read with GET");
		return get_image(w, c, url, id, rest + 8);
	}
	return send_error(w, c, method, url, MHD_HTTP_NOT_FOUND, NULL,
	    "no such resource");
}

static enum MHD_Result
handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
    const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
	struct web_server *w = cls;
	struct request *rq = *con_cls;

	(void)version;
	if (rq == NULL) {
		const char *cl;
		if ((rq = calloc(1, sizeof *rq)) == NULL)
			return MHD_NO;
		*con_cls = rq;
		if (strcmp(method, "OPTIONS") == 0 && w->cfg->serve.cors_origin != NULL) {
			struct MHD_Response *r = MHD_create_response_from_buffer(0, NULL,
			    MHD_RESPMEM_PERSISTENT);
			enum MHD_Result ret;
			if (r == NULL)
				return MHD_NO;
			common_headers(w, c, r);
			MHD_add_response_header(r, "Access-Control-Allow-Methods",
			    "GET, POST, DELETE");
			MHD_add_response_header(r, "Access-Control-Allow-Headers",
			    "Authorization, Content-Type, Last-Event-ID");
			MHD_add_response_header(r, "Access-Control-Max-Age", "600");
			rq->answered = 1;
			ret = MHD_queue_response(c, MHD_HTTP_NO_CONTENT, r);
			MHD_destroy_response(r);
			log_request(w, c, method, url, MHD_HTTP_NO_CONTENT);
			return ret;
		}
		if (!host_ok(w, c)) {
			rq->answered = 1;
			return send_error(w, c, method, url, MHD_HTTP_FORBIDDEN, "Host",
			    "this server answers requests for localhost only");
		}
		if (strcmp(url, "/healthz") != 0 && !authorized(w, c)) {
			rq->answered = 1;
			return send_error(w, c, method, url, MHD_HTTP_UNAUTHORIZED,
			    "Authorization", "a valid bearer token is required "
			    "(Authorization: Bearer TOKEN)");
		}
		cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
		if (cl != NULL && (strspn(cl, "0123456789") != strlen(cl) ||
		    strlen(cl) > 15 || strtoull(cl, NULL, 10) >
		    w->cfg->limits.yaml.max_document)) {
			rq->answered = 1;
			return send_error(w, c, method, url, HTTP_TOO_LARGE,
			    "body", "the body is over the limit of %zu bytes "
			    "(limits.job_size)", w->cfg->limits.yaml.max_document);
		}
		return MHD_YES;
	}
	if (*upload_size > 0) {
		size_t n = *upload_size;
		*upload_size = 0;
		if (rq->answered || rq->too_large)
			return MHD_YES;
		if (rq->len + n > w->cfg->limits.yaml.max_document) {
			rq->too_large = 1;
			return MHD_YES;
		}
		if (rq->len + n + 1 > rq->cap) {
			size_t nc = rq->cap ? rq->cap : 4096;
			char *nb;
			while (nc < rq->len + n + 1)
				nc *= 2;
			if ((nb = realloc(rq->body, nc)) == NULL)
				return MHD_NO;
			rq->body = nb;
			rq->cap = nc;
		}
		memcpy(rq->body + rq->len, upload, n);
		rq->len += n;
		rq->body[rq->len] = '\0';
		return MHD_YES;
	}
	if (rq->answered)
		return MHD_YES;
	rq->answered = 1;
	if (rq->too_large)
		return send_error(w, c, method, url, HTTP_TOO_LARGE, "body",
		    "the body is over the limit of %zu bytes (limits.job_size)",
		    w->cfg->limits.yaml.max_document);
	if (strcmp(method, "OPTIONS") == 0)
		return send_error(w, c, method, url, MHD_HTTP_METHOD_NOT_ALLOWED, NULL,
		    "cross-origin requests are not enabled (serve.cors_origin)");
	return route(w, c, url, method, rq);
}

static void
completed(void *cls, struct MHD_Connection *c, void **con_cls,
    enum MHD_RequestTerminationCode toe)
{
	struct request *rq = *con_cls;

	(void)cls;
	(void)c;
	(void)toe;
	if (rq != NULL) {
		free(rq->body);
		free(rq);
		*con_cls = NULL;
	}
}

static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
	struct web_server *w = cls;

	if (!w->verbose)
		return;
	fputs("sdbatch serve: ", stderr);
	vfprintf(stderr, fmt, ap);
}

/* ---------------------------------------------------------------- start, stop */

static int
parse_listen(const char *listen, struct sockaddr_storage *ss, socklen_t *sslen,
    int *loopback, struct sd_error *err)
{
	char host[256], *port;
	struct addrinfo hints, *ai = NULL;
	const char *p;
	int r;

	if (strlen(listen) >= sizeof host)
		return sd_fail(err, SD_ECONFIG, "listen: address too long");
	if (listen[0] == '[') {
		p = strchr(listen, ']');
		if (p == NULL || p[1] != ':')
			return sd_fail(err, SD_ECONFIG, "listen: \"%s\" is not [ADDR]:PORT",
			    listen);
		snprintf(host, sizeof host, "%.*s", (int)(p - listen - 1), listen + 1);
		port = (char *)p + 2;
	} else {
		p = strrchr(listen, ':');
		if (p == NULL)
			return sd_fail(err, SD_ECONFIG, "listen: \"%s\" is not ADDR:PORT",
			    listen);
		snprintf(host, sizeof host, "%.*s", (int)(p - listen), listen);
		port = (char *)p + 1;
	}
	if (port[0] == '\0' || strlen(port) > 5 || strspn(port, "0123456789") !=
	    strlen(port) || atoi(port) > 65535)
		return sd_fail(err, SD_ECONFIG, "listen: \"%s\": the port is a number "
		    "0..65535", listen);
	memset(&hints, 0, sizeof hints);
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if ((r = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai)) != 0 ||
	    ai == NULL)
		return sd_fail(err, SD_ECONFIG, "listen: %s: %s", host,
		    r ? gai_strerror(r) : "no address");
	memcpy(ss, ai->ai_addr, ai->ai_addrlen);
	*sslen = ai->ai_addrlen;
	freeaddrinfo(ai);
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)ss;
		*loopback = (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)ss;
		*loopback = IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
	} else
		*loopback = 0;
	return 0;
}

struct web_server *
web_start(const char *root, const struct sd_config *cfg, const char *listen,
    int verbose, struct sd_error *err)
{
	struct web_server *w;
	struct sockaddr_storage ss;
	socklen_t sslen = 0;
	const char *token;
	const union MHD_DaemonInfo *di;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD |
	    MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG;
	char host[INET6_ADDRSTRLEN];
	unsigned port = 0;

	if (listen == NULL)
		listen = cfg->serve.listen ? cfg->serve.listen : "127.0.0.1:8080";
	if ((w = calloc(1, sizeof *w)) == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		return NULL;
	}
	w->cfg = cfg;
	w->verbose = verbose;
	if (parse_listen(listen, &ss, &sslen, &w->loopback, err) < 0)
		goto fail0;
	token = cfg->serve.token;
	if (token == NULL)
		token = getenv("SDBATCH_SERVE_TOKEN");
	if (token != NULL && token[0] != '\0') {
		if (strlen(token) < 16) {
			sd_fail(err, SD_ECONFIG, "SDBATCH_SERVE_TOKEN: too short (at "
			    "least 16 characters)");
			goto fail0;
		}
		sha256(token, strlen(token), w->token_hash);
		w->has_token = 1;
	}
	if (!w->loopback && !w->has_token) {
		sd_fail(err, SD_ECONFIG, "listening on %s (not a loopback address) "
		    "needs a bearer token: set serve.token in the configuration or "
		    "SDBATCH_SERVE_TOKEN in the environment", listen);
		goto fail0;
	}
	if (spool_open(&w->spool, root, 1, err) < 0)
		goto fail0;
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	w->daemon = MHD_start_daemon(flags, 0, NULL, NULL, handle, w,
	    MHD_OPTION_EXTERNAL_LOGGER, mhd_log, w,
	    MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->serve.connections,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)65536,
	    MHD_OPTION_NOTIFY_COMPLETED, completed, w,
	    MHD_OPTION_END);
	if (w->daemon == NULL) {
		sd_fail(err, SD_EUNAVAILABLE, "cannot listen on %s (in use, or not an "
		    "address of this host?)", listen);
		goto fail1;
	}
	di = MHD_get_daemon_info(w->daemon, MHD_DAEMON_INFO_BIND_PORT);
	if (di != NULL)
		port = di->port;
	if (ss.ss_family == AF_INET6) {
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)(void *)&ss)->sin6_addr,
		    host, sizeof host);
		snprintf(w->url, sizeof w->url, "http://[%s]:%u", host, port);
	} else {
		inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)&ss)->sin_addr, host,
		    sizeof host);
		snprintf(w->url, sizeof w->url, "http://%s:%u", host, port);
	}
	return w;
fail1:
	spool_close(&w->spool);
fail0:
	free(w);
	return NULL;
}

const char *
web_url(const struct web_server *w)
{
	return w->url;
}

void
web_stop(struct web_server *w)
{
	if (w == NULL)
		return;
	w->stopping = 1;
	if (w->daemon != NULL)
		MHD_stop_daemon(w->daemon);
	spool_close(&w->spool);
	free(w);
}
