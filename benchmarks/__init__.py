"""Benchmarks and measurements: each a `python -m benchmarks.NAME` that imports only the library."""

# Where benchmarks keep what they build (worlds, teachers, stores, runs): git-ignored, outside the source tree.
WORK = "data/benchmarks"
