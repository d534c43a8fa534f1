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
   ``toyworld.training`` (tools on top).
"""

__version__ = "0.1.0"
