## tests for sample
check_PROGRAMS += tests/test_rng tests/test_scheduler
tests_test_rng_LDADD = $(TEST_LDADD)
tests_test_scheduler_LDADD = $(TEST_LDADD)
TESTS += tests/test_rng tests/test_scheduler
# sdbatch run with the samplers and sizes of issue 18 (needs src/sdbatch, tests/pngcmp)
TESTS += tests/run-samplers.sh
EXTRA_DIST += tests/run-samplers.sh
