## tests for serve: `sdbatch serve` over HTTP (curl) and the gallery in a
## headless browser (chromium), with the real binary and the tiny model
## spool_submit_job, the submission path of submit and serve
check_PROGRAMS += tests/test_submit
tests_test_submit_LDADD = $(TEST_LDADD)
TESTS += tests/test_submit
## cdp: drives chromium over the DevTools protocol (jansson only, never src/)
check_PROGRAMS += tests/cdp
tests_cdp_SOURCES = tests/cdp.c
tests_cdp_LDADD = $(JANSSON_LIBS)
SERVE_SH_TESTS = tests/serve-api.sh tests/serve-gallery.sh
TESTS += $(SERVE_SH_TESTS)
EXTRA_DIST += $(SERVE_SH_TESTS) tests/serve-lib.sh
clean-local: clean-serve-artifacts
clean-serve-artifacts:
	rm -rf tests/artifacts
.PHONY: clean-serve-artifacts
