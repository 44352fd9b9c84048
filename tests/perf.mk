## tests for the CPU backend's BLAS/CPU detection and `sdbatch bench` (perf)
check_PROGRAMS += tests/test_blas
tests_test_blas_LDADD = $(TEST_LDADD)
TESTS += tests/test_blas tests/bench.sh
EXTRA_DIST += tests/bench.sh
