## tests for models
check_PROGRAMS += tests/test_vae
tests_test_vae_LDADD = $(TEST_LDADD)
TESTS += tests/test_vae
check_PROGRAMS += tests/test_clip tests/test_unet
tests_test_clip_LDADD = $(TEST_LDADD)
tests_test_unet_LDADD = $(TEST_LDADD)
TESTS += tests/test_clip tests/test_unet
check_PROGRAMS += tests/test_spm tests/test_t5
tests_test_spm_LDADD = $(TEST_LDADD)
tests_test_t5_LDADD = $(TEST_LDADD)
TESTS += tests/test_spm tests/test_t5
check_PROGRAMS += tests/test_mmdit
tests_test_mmdit_LDADD = $(TEST_LDADD)
TESTS += tests/test_mmdit
