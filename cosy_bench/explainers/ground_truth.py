"""The ground-truth baseline: each unit labelled with its known concept(s)."""

from __future__ import annotations

from cosy_bench.explainers.base import Explainer, Explanations

#: separator of a polysemantic unit's planted concepts in its truth (``"red|grass"``)
TRUTH_SEP = "|"


class GroundTruthExplainer(Explainer):
    """The known concept of each unit (class names on ``output``; toy-world concept units).

    A polysemantic unit's truth lists its concepts (``"red|grass"``): with ``top_k = 1`` it
    is explained by that whole string, with ``top_k = K`` by each of its first ``K``
    concepts, one a rank (a unit with one concept keeps one explanation).
    """

    name = "ground_truth"

    def __init__(self, top_k: int = 1):
        self.set_top_k(top_k)

    def explain(self, ctx) -> Explanations:
        truth = ctx.model.ground_truth(ctx.layer)
        if truth is None:
            raise ValueError(
                f"explainer=ground_truth needs units with known labels, but layer "
                f"{ctx.layer.name!r} of model {ctx.model.name!r} has none. Layers with ground "
                f"truth: {[n for n, s in ctx.model.layers.items() if s.ground_truth]}"
            )
        if len(truth) != ctx.num_neurons:
            raise ValueError(f"layer {ctx.layer.name!r} has {ctx.num_neurons} units but its "
                             f"ground truth lists {len(truth)} names")
        if self.top_k == 1:
            return Explanations(dict(enumerate(truth)))
        rows = [{"neuron": k, "label": c} for k, t in enumerate(truth)
                for c in [p.strip() for p in str(t).split(TRUTH_SEP) if p.strip()][:self.top_k]]
        return Explanations.from_ranked(rows)
