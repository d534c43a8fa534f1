"""The Hydra app's machinery, behind the thin ``cosy_bench/run.py``: where the configs are
(``config``), ``layer=NAME`` for any layer a model yaml declares (``layers``), the record of
failed sweep jobs (``failures``) and the check of a run's inputs before it starts
(``inputs``). Top layer: may import anything below; ``config`` and ``layers`` import only
Hydra, OmegaConf and the standard library (Hydra's plugin scan imports them)."""
