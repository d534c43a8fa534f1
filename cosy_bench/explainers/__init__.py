"""Explainers: label every neuron of a layer with text (``explainer=`` configs).

:mod:`.base` is the interface; one module per simple explainer (:mod:`.random`,
:mod:`.ground_truth`, :mod:`.shuffled`, :mod:`.precomputed`, :mod:`.invert`), a subpackage per
explainer that needs several (:mod:`.clip_dissect`, :mod:`.milan`), and what two share in a
module named for it (:mod:`.formulas`, :mod:`.auroc`, :mod:`.concept_sets`, :mod:`.budget`: the
memory budget ``explainer.max_memory_gb``). May import the bottom
layers, ``loops`` and ``context``; never ``pipeline``, ``record`` or ``run``.
"""
