/* policy.c: the configuration's trust policy. */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "spool/policy.h"
#include "spool/util.h"
#include "spool/yamltree.h"

static void
free_list(char ***v, size_t *n)
{
	size_t i;

	for (i = 0; i < *n; i++)
		free((*v)[i]);
	free(*v);
	*v = NULL;
	*n = 0;
}

void
policy_init(struct sd_policy *p)
{
	memset(p, 0, sizeof *p);
}

void
policy_free(struct sd_policy *p)
{
	free_list(&p->input_roots, &p->n_input_roots);
	free_list(&p->callback_hosts, &p->n_callback_hosts);
	free_list(&p->secret_envs, &p->n_secret_envs);
	memset(p, 0, sizeof *p);
}

/* A list of strings (a single scalar counts as a list of one). */
static int
get_list(struct yctx *y, const struct ynode *v, const char *field,
    const char *base, char ***out, size_t *n)
{
	const struct ynode *one[1];
	const struct ynode *const *items = one;
	size_t i, count = 1;

	free_list(out, n);
	if (ytree_is_null(v))
		return 0;
	if (v->kind == YNODE_SEQ) {
		items = (const struct ynode *const *)v->items;
		count = v->n;
	} else if (v->kind == YNODE_SCALAR)
		one[0] = v;
	else
		return yfail(y, v, field, "expected a list");
	if ((*out = calloc(count + 1, sizeof **out)) == NULL)
		return sd_fail(y->err, SD_EINTERNAL, "out of memory");
	for (i = 0; i < count; i++) {
		char *s = NULL;
		if (yget_string(y, items[i], field, &s) < 0)
			return -1;
		if (base != NULL && s[0] != '/') {
			char *j = util_join(base, s);
			free(s);
			if ((s = j) == NULL)
				return sd_fail(y->err, SD_EINTERNAL, "out of memory");
		}
		(*out)[(*n)++] = s;
	}
	return 0;
}

int
policy_parse(struct yctx *y, struct sd_policy *p, const struct ynode *v,
    const char *base)
{
	size_t i;
	int r = 0;

	if (yget_map(y, v, "policy") < 0)
		return -1;
	for (i = 0; r == 0 && i < v->n; i++) {
		const char *k = v->keys[i]->value;
		const struct ynode *x = v->items[i];
		char f[64];

		snprintf(f, sizeof f, "policy.%.40s", k);
		if (strcmp(k, "input_roots") == 0)
			r = get_list(y, x, f, base, &p->input_roots, &p->n_input_roots);
		else if (strcmp(k, "callback_hosts") == 0)
			r = get_list(y, x, f, NULL, &p->callback_hosts,
			    &p->n_callback_hosts);
		else if (strcmp(k, "secret_envs") == 0)
			r = get_list(y, x, f, NULL, &p->secret_envs, &p->n_secret_envs);
		else if (strcmp(k, "callback_private") == 0)
			r = yget_bool(y, x, f, &p->callback_private);
		else if (strcmp(k, "callback_http") == 0)
			r = yget_bool(y, x, f, &p->callback_http);
		else
			r = yfail(y, v->keys[i], f, "unknown key (known: input_roots, "
			    "callback_hosts, callback_private, callback_http, "
			    "secret_envs)");
	}
	return r;
}

/* path with ".", ".." and repeated slashes taken out (absolute paths). */
static void
lexical(const char *path, char *out, size_t size)
{
	size_t o = 0;
	const char *p = path;

	out[0] = '\0';
	while (*p != '\0') {
		const char *e;
		size_t n;
		while (*p == '/')
			p++;
		if (*p == '\0')
			break;
		e = strchr(p, '/');
		n = e ? (size_t)(e - p) : strlen(p);
		if (n == 1 && p[0] == '.')
			;
		else if (n == 2 && p[0] == '.' && p[1] == '.') {
			while (o > 0 && out[o - 1] != '/')
				o--;
			if (o > 0)
				o--;
			out[o] = '\0';
		} else if (o + n + 2 < size) {
			out[o++] = '/';
			memcpy(out + o, p, n);
			o += n;
			out[o] = '\0';
		}
		p += n;
	}
	if (o == 0)
		snprintf(out, size, "/");
}

static int
inside(const char *path, const char *root)
{
	size_t n = strlen(root);

	while (n > 1 && root[n - 1] == '/')
		n--;
	if (n == 1 && root[0] == '/')
		return 1;
	return strncmp(path, root, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

int
policy_input_allowed(const struct sd_policy *p, const char *path)
{
	char real[PATH_MAX], lex[PATH_MAX], root[PATH_MAX];
	size_t i;

	if (p->n_input_roots == 0)
		return 1;
	if (path == NULL || path[0] != '/')
		return 0;	/* callers give absolute paths */
	if (realpath(path, real) == NULL)
		lexical(path, real, sizeof real);
	lexical(path, lex, sizeof lex);
	for (i = 0; i < p->n_input_roots; i++) {
		const char *r = realpath(p->input_roots[i], root) ? root :
		    p->input_roots[i];
		/* both the path as written and where it leads stay inside */
		if (inside(real, r) && (inside(lex, r) ||
		    inside(lex, p->input_roots[i])))
			return 1;
	}
	return 0;
}

int
policy_check_dirs(const struct sd_policy *p, const char *key, char *const *dirs, size_t n,
    struct sd_error *err)
{
	char cwd[PATH_MAX];
	size_t i;

	for (i = 0; i < n && p->n_input_roots > 0; i++) {
		char *abs = NULL;
		int ok;
		if (dirs[i][0] != '/') {
			if (getcwd(cwd, sizeof cwd) == NULL)
				return sd_fail(err, SD_ECONFIG, "%s: %.200s: cannot tell the current "
				    "folder", key, dirs[i]);
			if ((abs = util_join(cwd, dirs[i])) == NULL)
				return sd_fail(err, SD_EINTERNAL, "out of memory");
		}
		ok = policy_input_allowed(p, abs ? abs : dirs[i]);
		free(abs);
		if (!ok)
			return sd_fail(err, SD_ECONFIG, "%s: %.300s is outside the input roots "
			    "(policy.input_roots): jobs read from it by name", key, dirs[i]);
	}
	return 0;
}

int
policy_check_url(const struct sd_policy *p, const char *url, char *why,
    size_t size)
{
	char host[256];
	const char *h;
	size_t n, i;

	if (strncasecmp(url, "https://", 8) == 0)
		h = url + 8;
	else if (strncasecmp(url, "http://", 7) == 0) {
		h = url + 7;
		if (!p->callback_http) {
			snprintf(why, size, "plain http is not allowed by the "
			    "configuration (policy.callback_http); use https");
			return -1;
		}
	} else {
		snprintf(why, size, "only http and https callbacks");
		return -1;
	}
	if (strchr(h, '@') != NULL && strchr(h, '@') < h + strcspn(h, "/?#")) {
		snprintf(why, size, "user information in the URL is not allowed");
		return -1;
	}
	if (*h == '[') {
		n = strcspn(h + 1, "]");
		h++;
	} else
		n = strcspn(h, ":/?#");
	if (n == 0 || n >= sizeof host) {
		snprintf(why, size, "no host in the URL");
		return -1;
	}
	for (i = 0; i < n; i++)
		host[i] = (char)tolower((unsigned char)h[i]);
	host[n] = '\0';
	if (p->n_callback_hosts == 0)
		return 0;
	for (i = 0; i < p->n_callback_hosts; i++) {
		const char *a = p->callback_hosts[i];
		if (strcasecmp(a, host) == 0)
			return 0;
		if (a[0] == '*' && a[1] == '.') {
			size_t la = strlen(a + 1), lh = strlen(host);
			if (lh > la && strcasecmp(host + lh - la, a + 1) == 0)
				return 0;
		}
	}
	snprintf(why, size, "host %.100s is not among the configuration's "
	    "callback hosts (policy.callback_hosts)", host);
	return -1;
}

static int
private_v4(uint32_t a)
{
	return (a >> 24) == 127 || (a >> 24) == 10 || (a >> 24) == 0 ||
	    (a >> 20) == (172u << 4 | 1) || (a >> 16) == (192u << 8 | 168) ||
	    (a >> 16) == (169u << 8 | 254) || (a >> 22) == (100u << 2 | 1) ||
	    (a >> 28) >= 14;	/* multicast and reserved */
}

int
policy_address_allowed(const struct sd_policy *p, const struct sockaddr *a)
{
	if (p->callback_private)
		return 1;
	if (a->sa_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)a;
		return !private_v4(ntohl(s->sin_addr.s_addr));
	}
	if (a->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)a;
		const uint8_t *b = s->sin6_addr.s6_addr;
		static const uint8_t zero[10];
		if (memcmp(b, zero, 10) == 0 && b[10] == 0xff && b[11] == 0xff)
			return !private_v4((uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 |
			    (uint32_t)b[14] << 8 | b[15]);	/* v4-mapped */
		if (IN6_IS_ADDR_LOOPBACK(&s->sin6_addr) ||
		    IN6_IS_ADDR_UNSPECIFIED(&s->sin6_addr) ||
		    IN6_IS_ADDR_LINKLOCAL(&s->sin6_addr) ||
		    IN6_IS_ADDR_SITELOCAL(&s->sin6_addr) ||
		    IN6_IS_ADDR_MULTICAST(&s->sin6_addr) || (b[0] & 0xfe) == 0xfc)
			return 0;
		return 1;
	}
	return 0;
}

int
policy_secret_allowed(const struct sd_policy *p, const char *name)
{
	size_t i;

	for (i = 0; i < p->n_secret_envs; i++)
		if (strcmp(p->secret_envs[i], name) == 0)
			return 1;
	return 0;
}
