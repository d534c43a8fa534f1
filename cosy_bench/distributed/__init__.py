"""Running one job on several processes (DDP): ranks and collectives (:mod:`.ranks`),
work split without padding (:mod:`.shards`), starting and joining the processes
(:mod:`.session`). Imports nothing else of cosy_bench."""
