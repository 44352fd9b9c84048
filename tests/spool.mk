## tests for spool: unit tests of the spool layer, the callback receiver,
## and shell tests that run the real sdbatch binary against temporary spools
check_PROGRAMS += tests/test_job tests/test_spool tests/hookd tests/test_params
tests_test_job_LDADD = $(TEST_LDADD)
tests_test_spool_LDADD = $(TEST_LDADD)
tests_test_params_LDADD = $(TEST_LDADD)
## hookd is a Standard Webhooks receiver with its own HMAC and base64 code:
## it links libcrypto only, never src/spool.
tests_hookd_SOURCES = tests/hookd.c
tests_hookd_LDADD = $(CRYPTO_LIBS)
TESTS += tests/test_job tests/test_spool tests/test_params
EXTRA_DIST += tests/strength-steps.txt
SPOOL_SH_TESTS = tests/spool-cli.sh tests/spool-workers.sh tests/spool-kill.sh \
	tests/spool-term.sh tests/spool-malformed.sh tests/spool-callback.sh \
	tests/spool-cancel.sh tests/spool-once.sh tests/spool-params.sh \
	tests/spool-ownership.sh tests/spool-finish.sh tests/spool-escapes.sh \
	tests/spool-policy.sh tests/spool-submit.sh
TESTS += $(SPOOL_SH_TESTS)
EXTRA_DIST += $(SPOOL_SH_TESTS) tests/spool-lib.sh
## contrib/sdbatch-slurm.sh under a single-node Slurm that the test starts
## (slurm-wlm, munge; SKIP without root or the packages)
TESTS += tests/slurm.sh
EXTRA_DIST += tests/slurm.sh
## issue 15: the configuration's trust policy
check_PROGRAMS += tests/test_policy
tests_test_policy_LDADD = $(TEST_LDADD)
TESTS += tests/test_policy
