## tests for sample
check_PROGRAMS += tests/test_rng tests/test_scheduler
tests_test_rng_LDADD = $(TEST_LDADD)
tests_test_scheduler_LDADD = $(TEST_LDADD)
TESTS += tests/test_rng tests/test_scheduler
# sdbatch run with the samplers and sizes of issue 18 (needs src/sdbatch, tests/pngcmp)
TESTS += tests/run-samplers.sh
EXTRA_DIST += tests/run-samplers.sh
## LoRA and A1111's prompt syntax
check_PROGRAMS += tests/test_lora tests/test_prompt
tests_test_lora_SOURCES = tests/test_lora.c tests/caserun.h
tests_test_lora_LDADD = $(TEST_LDADD)
tests_test_prompt_SOURCES = tests/test_prompt.c tests/caserun.h
tests_test_prompt_LDADD = $(TEST_LDADD)
TESTS += tests/test_lora tests/test_prompt
check_PROGRAMS += tests/streplace
tests_streplace_LDADD = $(TEST_LDADD)
TESTS += tests/run-lora.sh
EXTRA_DIST += tests/run-lora.sh
