"""The ground-truth baseline: each unit labelled with its known concept."""

from __future__ import annotations

from cosy_bench.explainers.base import Explainer, Explanations


class GroundTruthExplainer(Explainer):
    """The known concept of each unit (class names on ``output``; toy-world concept units)."""

    name = "ground_truth"

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
        return Explanations(dict(enumerate(truth)))
