## tests: TAP test programs and scripts
check_LIBRARIES = tests/libtestutil.a
tests_libtestutil_a_SOURCES = tests/tap.c tests/tap.h tests/testutil.c tests/testutil.h
TEST_LDADD = tests/libtestutil.a $(LDADD)
EXTRA_DIST += tests/summary.sh

check_PROGRAMS += tests/test_safetensors tests/test_ops
tests_test_safetensors_LDADD = $(TEST_LDADD)
tests_test_ops_LDADD = $(TEST_LDADD)
TESTS += tests/test_safetensors tests/test_ops
check_PROGRAMS += tests/test_checkpoint
tests_test_checkpoint_LDADD = $(TEST_LDADD)
TESTS += tests/test_checkpoint
check_PROGRAMS += tests/test_pipeline
tests_test_pipeline_LDADD = $(TEST_LDADD)
TESTS += tests/test_pipeline
check_PROGRAMS += tests/pngcmp
tests_pngcmp_LDADD = $(TEST_LDADD)
TESTS += tests/run-e2e.sh
EXTRA_DIST += tests/run-e2e.sh
check_PROGRAMS += tests/pngvariant
tests_pngvariant_LDADD = $(TEST_LDADD)
TESTS += tests/run-inputs.sh
EXTRA_DIST += tests/run-inputs.sh
check_PROGRAMS += tests/test_jpeg
tests_test_jpeg_LDADD = $(TEST_LDADD)
TESTS += tests/test_jpeg
TESTS += tests/info.sh
EXTRA_DIST += tests/info.sh
## issue 15: an op error is a sticky status of the context, never exit()
check_PROGRAMS += tests/test_ctx_status
tests_test_ctx_status_LDADD = $(TEST_LDADD)
TESTS += tests/test_ctx_status
