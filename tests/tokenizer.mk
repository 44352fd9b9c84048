## tests for tokenizer
check_PROGRAMS += tests/test_tokenizer
tests_test_tokenizer_LDADD = $(TEST_LDADD)
TESTS += tests/test_tokenizer
