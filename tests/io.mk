## tests for io
