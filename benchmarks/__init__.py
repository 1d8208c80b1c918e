"""The benchmarks: ``python -m benchmarks SUITE... [--smoke] [--json DIR]`` (benchmarks/run.py)."""
