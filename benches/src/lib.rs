//! Benchmarks for Freshet (run by `make bench`).
