## tests for hub: the Hugging Face Hub cache and downloads, against fakehub,
## a stand-in for the Hub on 127.0.0.1 (it links libcrypto only, never src/)
check_PROGRAMS += tests/test_hub tests/fakehub
tests_test_hub_LDADD = $(TEST_LDADD)
tests_fakehub_SOURCES = tests/fakehub.c
tests_fakehub_LDADD = $(CRYPTO_LIBS)
TESTS += tests/test_hub tests/hub-pull.sh
EXTRA_DIST += tests/hub-pull.sh
