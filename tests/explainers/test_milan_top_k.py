"""MILAN with ``explainer.top_k``: each unit's K best distinct reranked captions, rank 1 the
caption of a top-1 run (the shipped toy decoder on toy-world probe images)."""

from __future__ import annotations

import torch

from cosy_bench.explainers.milan import MilanExplainer
from cosy_bench.loops.exemplars import Exemplars
from cosy_bench.toyworld.model import preprocess_transform

PROBE = {"_target_": "cosy_bench.toyworld.data.ToyProbeSet", "n": 12, "seed": 777}
FAST = {"beam_size": 10, "length": 6}  # a narrower, shorter beam than the toy decoder's


class _Ctx:
    """What MILAN reads of a run: the units, the model's transform, the units' exemplars
    (here 3 probe images each with random activation maps, as the exemplar pass returns)."""

    wanted, num_neurons = [0, 1, 2, 3], 4

    class model:  # noqa: N801
        transform = staticmethod(preprocess_transform())

    def exemplars(self, probe, k, **_):
        g = torch.Generator().manual_seed(0)
        return Exemplars(indices=torch.arange(12).view(4, 3), scores=torch.ones(4, 3),
                         maps=torch.rand(4, 3, 8, 8, generator=g), levels=torch.full((4,), 0.8))


def test_milan_top_k_gives_distinct_captions_and_rank_1_is_the_top1_caption():
    one = MilanExplainer(PROBE, checkpoint="toyworld", k=3, **FAST).explain(_Ctx())
    two = MilanExplainer(PROBE, checkpoint="toyworld", k=3, top_k=2, **FAST).explain(_Ctx())
    assert sorted(one.texts) == sorted(two.texts) == [0, 1, 2, 3] and not one.more
    for u in range(4):
        ranked = two.ranked(u)
        assert len(ranked) == 2 and ranked[0] != ranked[1] and all(ranked)
        assert ranked[0] == one.texts[u]
        assert two.value("milan_score", u, 1) == one.value("milan_score", u, 1)
        # best first by MILAN's reranking score
        assert float(two.value("milan_score", u, 1)) >= float(two.value("milan_score", u, 2))
    csv_text = two.to_csv()
    assert csv_text.splitlines()[0].startswith("neuron,rank,explanation,milan_score")
