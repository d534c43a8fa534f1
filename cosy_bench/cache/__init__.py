"""The cache shared by all runs, sweeps and nodes: content-keyed folders, atomic writes
(:mod:`.store`), claims so that one process computes what others wait for (:mod:`.claims`),
checksums written with every artefact and verified on read (:mod:`.checked`,
:mod:`.images`), content fingerprints of weights and folders (:mod:`.fingerprint`), and the
cache folder's checks and cleanup (:mod:`.hygiene`). Imports only
:mod:`cosy_bench.distributed.ranks`."""
