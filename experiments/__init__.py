"""Scripts that run aelab end to end: experiments/run.py (the presets -> RESULTS.md/.json) and
experiments/benchmarks/run.py (what the framework costs). Run them as scripts; they import each other's shared
helpers as `experiments.*` (each script puts the checkout on sys.path first)."""
