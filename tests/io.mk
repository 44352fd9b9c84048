## tests for io
check_PROGRAMS += tests/test_png
tests_test_png_LDADD = $(TEST_LDADD)
TESTS += tests/test_png
check_PROGRAMS += tests/test_synth
tests_test_synth_LDADD = $(TEST_LDADD)
TESTS += tests/test_synth
