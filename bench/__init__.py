"""anet's benchmark suite: `python3 -m bench [--quick]`; see docs/benchmarks.md."""
