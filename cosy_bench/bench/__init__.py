"""``python -m cosy_bench.bench NAME``: benchmarks that time this suite's hot paths against
the loop a user would write (scorers, explainers, MILAN). A top-layer tool: may import
anything of cosy_bench."""
