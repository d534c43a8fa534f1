"""The cache shared by all runs, sweeps and nodes: content-keyed folders, atomic writes
(:mod:`.store`), and claims so that one process computes what others wait for
(:mod:`.claims`). Imports only :mod:`cosy_bench.distributed.ranks`."""
