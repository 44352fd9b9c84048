/* policy.h: the trust policy of the configuration (its `policy:` section,
 * see sdbatch.yaml(5)): what a job may read, where its callbacks may go,
 * which secrets it may sign them with.
 *
 *   policy:
 *     input_roots: [/srv/models, /srv/inputs]  # models and images only here
 *     callback_hosts: [hooks.example.com, "*.example.org"]
 *     callback_private: false   # loopback, link-local, private addresses
 *     callback_http: false      # plain http
 *     secret_envs: [HOOK_SECRET]   # variables a job may name as secret_env
 *
 * Without the section: inputs anywhere, callbacks to any public address
 * over https, no secrets.  The callback's address is checked as curl
 * connects (after DNS), so a name that resolves to a private address is
 * refused too. */
#ifndef SD_SPOOL_POLICY_H
#define SD_SPOOL_POLICY_H

#include <stddef.h>
#include <sys/socket.h>

#include "core/error.h"

struct sd_policy {
	char **input_roots;	/* none: anywhere */
	size_t n_input_roots;
	char **callback_hosts;	/* none: any host */
	size_t n_callback_hosts;
	int callback_private;	/* allow loopback, link-local, private */
	int callback_http;	/* allow http:// */
	char **secret_envs;	/* the variables a job may name */
	size_t n_secret_envs;
};

struct yctx;
struct ynode;

void policy_init(struct sd_policy *p);
void policy_free(struct sd_policy *p);

/* Parse the `policy:` mapping v (relative roots against base) into p.
 * Errors name the key and line (SD_ECONFIG). */
int policy_parse(struct yctx *y, struct sd_policy *p, const struct ynode *v,
    const char *base);

/* Is path (as given, or resolved) inside the input roots?  1 or 0; the
 * lexical form is judged for a path that does not exist, so that the
 * answer for a path outside is the same whether it exists or not. */
int policy_input_allowed(const struct sd_policy *p, const char *path);

/* Folders that jobs read from by name (key: "lora_dirs"): with input
 * roots, each must lie inside them (relative ones against the current
 * folder).  0, or -1 with err (SD_ECONFIG) naming key and the folder. */
int policy_check_dirs(const struct sd_policy *p, const char *key, char *const *dirs, size_t n,
    struct sd_error *err);

/* May a callback go to url (scheme and host)?  0, or -1 with why. */
int policy_check_url(const struct sd_policy *p, const char *url, char *why,
    size_t size);

/* May a callback connect to this address?  1 or 0. */
int policy_address_allowed(const struct sd_policy *p, const struct sockaddr *a);

/* May a job name this environment variable as its secret?  1 or 0. */
int policy_secret_allowed(const struct sd_policy *p, const char *name);

#endif
