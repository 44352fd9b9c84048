## tests for sample
