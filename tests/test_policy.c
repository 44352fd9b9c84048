/* test_policy.c: the configuration's trust policy (issue 15, item 10):
 * input roots, callback URLs, addresses and secrets. */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spool/conf.h"
#include "spool/policy.h"
#include "tap.h"

static int
v4(const struct sd_policy *p, const char *a)
{
	struct sockaddr_in s;

	memset(&s, 0, sizeof s);
	s.sin_family = AF_INET;
	inet_pton(AF_INET, a, &s.sin_addr);
	return policy_address_allowed(p, (struct sockaddr *)&s);
}

static int
v6(const struct sd_policy *p, const char *a)
{
	struct sockaddr_in6 s;

	memset(&s, 0, sizeof s);
	s.sin6_family = AF_INET6;
	inet_pton(AF_INET6, a, &s.sin6_addr);
	return policy_address_allowed(p, (struct sockaddr *)&s);
}

int
main(void)
{
	static char dir[] = "/tmp/sdbatch-policy-XXXXXX";
	struct sd_config c;
	struct sd_error err;
	char doc[2048], why[600], path[700];
	const struct sd_policy *p = &c.policy;

	if (mkdtemp(dir) == NULL)
		return tap_skip_all("no temporary folder");
	snprintf(path, sizeof path, "%s/in", dir);
	mkdir(path, 0777);
	snprintf(path, sizeof path, "%s/in/m.safetensors", dir);
	fclose(fopen(path, "w"));
	snprintf(path, sizeof path, "%s/in/out", dir);
	if (symlink("/etc", path) != 0)
		tap_diag("no symbolic link");

	/* The defaults: https to public addresses, no secrets, any input. */
	config_init(&c);
	sd_error_clear(&err);
	tap_ok(policy_check_url(p, "http://example.com/h", why, sizeof why) < 0 &&
	    strstr(why, "plain http"), "default: http refused (%s)", why);
	tap_ok(policy_check_url(p, "https://example.com/h", why, sizeof why) == 0,
	    "default: https to any host");
	tap_ok(!v4(p, "127.0.0.1") && !v4(p, "10.1.2.3") && !v4(p, "172.16.0.1") &&
	    !v4(p, "192.168.1.1") && !v4(p, "169.254.169.254") && !v4(p, "100.64.0.1") &&
	    !v4(p, "0.0.0.0"), "default: loopback, private, link-local (the cloud "
	    "metadata address), CGNAT refused");
	tap_ok(v4(p, "93.184.216.34") && v4(p, "172.32.0.1"), "public addresses allowed");
	tap_ok(!v6(p, "::1") && !v6(p, "fe80::1") && !v6(p, "fd00::1") &&
	    !v6(p, "::ffff:127.0.0.1") && v6(p, "2606:2800:220:1::1"),
	    "IPv6: loopback, link-local, ULA, v4-mapped loopback refused; public allowed");
	tap_ok(!policy_secret_allowed(p, "HOOK_SECRET"), "default: no secrets");
	tap_ok(policy_input_allowed(p, "/etc/shadow"), "default: inputs anywhere");
	config_free(&c);

	/* A policy. */
	config_init(&c);
	snprintf(doc, sizeof doc, "policy:\n"
	    "  input_roots: [%s/in]\n"
	    "  callback_hosts: [hooks.example.com, \"*.example.org\"]\n"
	    "  callback_private: true\n"
	    "  callback_http: true\n"
	    "  secret_envs: [HOOK_SECRET]\n", dir);
	tap_ok(config_parse(&c, doc, strlen(doc), "test.yaml", &err) == 0,
	    "the policy section parses %s", err.message);
	tap_ok(policy_check_url(p, "http://hooks.example.com:8080/x", why, sizeof why) == 0,
	    "a listed host, http allowed");
	tap_ok(policy_check_url(p, "https://a.b.example.org/x", why, sizeof why) == 0 &&
	    policy_check_url(p, "https://example.org/x", why, sizeof why) < 0,
	    "*.example.org: its subdomains only");
	tap_ok(policy_check_url(p, "https://evil.com/x", why, sizeof why) < 0 &&
	    strstr(why, "evil.com"), "another host refused (%s)", why);
	tap_ok(policy_check_url(p, "https://hooks.example.com@evil.com/x", why,
	    sizeof why) < 0, "user information in the URL refused");
	tap_ok(v4(p, "127.0.0.1"), "callback_private: loopback allowed");
	tap_ok(policy_secret_allowed(p, "HOOK_SECRET") &&
	    !policy_secret_allowed(p, "DB_PASSWORD"), "only the listed secret");
	snprintf(path, sizeof path, "%s/in/m.safetensors", dir);
	tap_ok(policy_input_allowed(p, path), "a file inside the root");
	snprintf(path, sizeof path, "%s/in/missing.safetensors", dir);
	tap_ok(policy_input_allowed(p, path), "a missing file inside (its own error later)");
	tap_ok(!policy_input_allowed(p, "/etc/shadow") &&
	    !policy_input_allowed(p, "/etc/no-such-file"), "outside, existing or not");
	snprintf(path, sizeof path, "%s/in/../in/../../etc/passwd", dir);
	tap_ok(!policy_input_allowed(p, path), "`..` out of the root");
	snprintf(path, sizeof path, "%s/in/out/passwd", dir);
	tap_ok(!policy_input_allowed(p, path), "a symbolic link out of the root");
	snprintf(path, sizeof path, "%sx/m.safetensors", dir);
	tap_ok(!policy_input_allowed(p, path), "a sibling folder with the root's "
	    "name as prefix is outside");
	config_free(&c);

	config_init(&c);
	snprintf(doc, sizeof doc, "policy: { secret_env: [X] }\n");
	tap_ok(config_parse(&c, doc, strlen(doc), "test.yaml", &err) < 0 &&
	    err.code == SD_ECONFIG && strstr(err.message, "secret_env"),
	    "an unknown policy key is a configuration error (%s)", err.message);
	config_free(&c);
	snprintf(doc, sizeof doc, "rm -rf '%s'", dir);
	if (system(doc) != 0)
		tap_diag("could not remove %s", dir);
	return tap_done();
}
