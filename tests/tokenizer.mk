## tests for tokenizer
