"""NeuralOps benchmarks: `make bench` (python -m benchmarks) prints figures and writes
reports/benchmarks.md. They are not tests: nothing here asserts a timing."""
