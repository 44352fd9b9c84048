## src/sample
