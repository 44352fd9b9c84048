## tests for models
