//! Benchmarks; each compares gpulab with the tool a user would otherwise run and reports a ratio.
