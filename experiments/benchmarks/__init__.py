"""The benchmark rows of experiments/benchmarks/run.py: harness (sizes, report, composed configs, aelab and plain
training), cpu (rows a, m, b, c), gpu (row d), sweep (row e)."""
