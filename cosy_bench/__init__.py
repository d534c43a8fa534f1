"""cosy_bench: a benchmark suite for textual explanations of neurons, built on CoSy.

Layers, each importing only from those below it (``tests/test_layout.py`` checks it):

1. ``scorers``, ``prompts``, ``schema`` (the typed config), ``distributed``, ``cache``,
   ``data``, ``generators``, ``models``, ``toyworld`` (the runtime world: its renderer,
   generator, data, model and CLIP);
2. ``loops``: the Lightning predict loops (activations, synthesis, exemplars);
3. ``context``: what a run hands every stage and explainer;
4. ``explainers``, ``units`` (neurons or a sparse dictionary's latents);
5. ``record`` (what a run folder holds), ``pipeline`` (the stages in sequence);
6. ``loggers``, ``leaderboard``, ``experiments``, ``run`` (the Hydra app) and ``app`` (its
   machinery: config location, layer plugin, failure records, input checks), ``bench`` and
   ``toyworld.training`` (tools on top), and ``api`` (the notebook API: :func:`evaluate`,
   :func:`score`, imported on first use so that ``import cosy_bench`` stays light).
"""

__version__ = "0.1.0"
__all__ = ["evaluate", "score"]


def __getattr__(name: str):
    """``cosy_bench.evaluate`` and ``cosy_bench.score`` from :mod:`cosy_bench.api`, loaded on
    first use."""
    if name in __all__:
        from cosy_bench import api

        return getattr(api, name)
    raise AttributeError(f"module 'cosy_bench' has no attribute {name!r}")
