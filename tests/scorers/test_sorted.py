"""The sorted-control fast path equals score_all, and its cache entry follows the activations."""

from __future__ import annotations

import os

import pytest
import torch
from helpers import near_constant_control

from cosy_bench.scorers import score_all
from cosy_bench.scorers.sorted import SortedControl, score_sorted, sort_control

ALL = ["auc", "mad", "utest"]


def _tied(rows: int, k: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    """ReLU'd values on a 0.1 grid: many exact ties and zeros; neuron 0 is dead."""
    gen = torch.Generator().manual_seed(seed)
    x = ((torch.randn(rows, k, generator=gen) + shift).clamp_min(0) * 10).round() / 10
    x[:, 0] = 0.0
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.int64])
def test_sorted_path_equals_score_all(dtype):
    scale = 10 if dtype == torch.int64 else 1  # integers: the 0.1 grid times 10
    control = (_tied(500, 9, 0) * scale).to(dtype)
    concept = (_tied(13, 9, 1, shift=1.0) * scale).to(dtype)
    ref = score_all(ALL, control, concept)
    sorted_control = sort_control(control)
    fast = score_sorted(ALL, sorted_control, concept)
    assert torch.equal(sorted_control.values, torch.sort(control.T.to(
        sorted_control.values.dtype), dim=1).values)  # sorting left the values intact
    assert list(fast) == list(ref) == ["auc", "mad", "utest_u", "utest_p"]
    for name in ref:
        assert torch.allclose(fast[name], ref[name], rtol=0, atol=1e-12), name
    assert torch.equal(fast["auc"], ref["auc"])  # the same integer counts
    assert fast["mad"][0] == 0.0 and fast["auc"][0] == 0.5  # dead neuron: MAD 0


def test_mixed_dtypes_compare_exactly():
    control = torch.tensor([[0.1], [0.2], [0.3]], dtype=torch.float32)
    concept = torch.tensor([[0.2]], dtype=torch.float64)  # not float32's 0.2: above it
    ref = score_all(["auc"], control, concept)["auc"]
    assert torch.equal(score_sorted(["auc"], sort_control(control), concept)["auc"], ref)


def test_select_scores_a_subset_of_neurons():
    control, concept = _tied(300, 12, 2), _tied(20, 12, 3, shift=0.5)
    neurons = [7, 2, 11]
    fast = score_sorted(["auc", "mad"], sort_control(control).select(neurons),
                        concept[:, neurons])
    ref = score_all(["auc", "mad"], control[:, neurons], concept[:, neurons])
    assert torch.equal(fast["auc"], ref["auc"])
    assert torch.allclose(fast["mad"], ref["mad"], rtol=0, atol=1e-12)


def test_round_trip_through_tensors_keeps_every_field():
    s = sort_control(_tied(50, 4, 4))
    back = SortedControl.from_tensors(s.to_tensors())
    assert all(torch.equal(a, b) for a, b in zip(s, back, strict=True)) and back.n == 50
    assert torch.equal(back.values, torch.sort(_tied(50, 4, 4).T, dim=1).values)


def test_nan_in_control_stops_only_the_neurons_scored():
    control, concept = _tied(40, 5, 5), _tied(6, 5, 8)
    control[7, 3] = float("nan")
    sorted_control = sort_control(control)
    with pytest.raises(ValueError, match="NaN in neuron 3"):
        score_sorted(["auc"], sorted_control, concept)
    keep = [0, 1, 4]
    assert torch.equal(score_sorted(["auc"], sorted_control.select(keep), concept[:, keep])["auc"],
                       score_all(["auc"], control[:, keep], concept[:, keep])["auc"])


def test_wrong_neuron_count_is_a_clear_error():
    with pytest.raises(ValueError, match="select the same neurons"):
        score_sorted(["auc"], sort_control(_tied(40, 5, 6)), _tied(4, 3, 7))
    with pytest.raises(ValueError, match="unknown"):
        score_sorted(["nope"], sort_control(_tied(40, 5, 6)), _tied(4, 5, 7))


def test_cache_entry_is_derived_from_and_invalidated_with_the_activations(compose, smoke,
                                                                          tmp_path):
    from hydra.utils import instantiate

    from cosy_bench.cache.store import Cache, save_tensors_atomic
    from cosy_bench.context import RunContext
    from cosy_bench.models import create_model

    cfg = compose(smoke(tmp_path / "cache", "dataset.n=6"))
    model = create_model(cfg.model, seed=0)
    ctx = RunContext(cfg, Cache(cfg.paths.cache_dir), model, model.layer(cfg.layer.name),
                     None, 0)
    dataset = instantiate(cfg.dataset)
    source = ctx.activations_path(dataset)
    acts = torch.arange(6 * 4, dtype=torch.float32).reshape(6, 4).flip(0)
    save_tensors_atomic(source, {"activations": acts, "index": torch.arange(6),
                                 "skipped": torch.tensor(0)})

    first = ctx.sorted_control(dataset)
    assert torch.equal(first.values, acts.T.flip(1)) and ctx.stats["control_skipped"] == 0
    assert ctx.stats["control_activations_computed"] is False  # sorted now, not computed
    entries = sorted(source.parent.glob(f"{source.stem}.sorted-*"))
    assert len(entries) == 1
    assert torch.equal(ctx.sorted_control(dataset).values, first.values)  # read back

    # the activations are computed again (a new file): the sorted entry follows them
    save_tensors_atomic(source, {"activations": -acts, "index": torch.arange(6),
                                 "skipped": torch.tensor(0)})
    st = source.stat()
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    second = ctx.sorted_control(dataset)
    assert torch.equal(second.values, (-acts).T.sort(dim=1).values)
    assert sorted(source.parent.glob(f"{source.stem}.sorted-*")) != entries
    assert len(list(source.parent.glob(f"{source.stem}.sorted-*"))) == 1  # stale one removed


def test_sorted_mad_gives_near_constant_columns_zero_as_mad_does():
    """The control of tests/scorers/test_cosy.py::test_near_constant_control_columns_give_mad_
    zero_not_1e7 (conftest.near_constant_control): the pipeline scores MAD through this
    path, so the rule must be the same."""
    from cosy_bench.scorers.cosy import mad

    control, concept = near_constant_control()
    sorted_control = sort_control(control)
    fast = score_sorted(["mad"], sorted_control, concept)["mad"]
    assert torch.allclose(fast, mad(control, concept), rtol=1e-12, atol=0)  # summation order
    assert fast[1].item() == 0.0 and fast[2].item() == 0.0
    assert fast[0].item() != 0.0 and fast[3].abs().item() > 100
    assert sorted_control.constant.tolist() == [False, True, True, False]


def test_large_controls_are_sorted_in_row_blocks_on_threads_exactly():
    """Above 2^20 values the CPU sort is split into row blocks, one thread each: the same
    rows as torch.sort, NaN last, and the scores of the unsplit path."""
    from cosy_bench.scorers.cosy import _PARALLEL_SORT_MIN, _row_blocks, _sorted_columns

    g = torch.Generator().manual_seed(3)
    control = torch.randn(20_000, 64, generator=g).round(decimals=2)  # ties
    control[5, 7] = float("nan")
    assert control.numel() >= _PARALLEL_SORT_MIN
    assert len(_row_blocks(64, control.numel())) == min(torch.get_num_threads(), 64)
    got = _sorted_columns(control, torch.float32)
    assert torch.equal(got[:, :-1], torch.sort(control.T, dim=1).values[:, :-1])
    assert torch.isnan(got[7, -1]) and not torch.isnan(got[:7, -1]).any()
    keep = [k for k in range(64) if k != 7]
    concept = torch.randn(30, 64, generator=g)
    fast = score_sorted(["auc", "mad"], sort_control(control[:, keep]), concept[:, keep])
    from sklearn.metrics import roc_auc_score

    for j in (0, 31, 62):  # scikit-learn, one neuron at a time
        k = keep[j]
        labels = [0] * control.shape[0] + [1] * concept.shape[0]
        want = roc_auc_score(labels, torch.cat([control[:, k], concept[:, k]]).numpy())
        assert fast["auc"][j].item() == pytest.approx(want, abs=1e-12)


def test_a_control_sorted_without_tie_sums_scores_the_same():
    """``sort_control(ties=False)`` (score_all's AUC/MAD path) leaves ``ties`` None; a U test
    then counts them itself, and saving fills them in: every value as the eager path."""
    g = torch.Generator().manual_seed(5)
    control = torch.randn(300, 6, generator=g).round(decimals=1)
    concept = torch.randn(9, 6, generator=g).round(decimals=1)
    lazy, eager = sort_control(control, ties=False), sort_control(control)
    assert lazy.ties is None and eager.ties is not None
    names = ["auc", "mad", "utest"]
    a, b = score_sorted(names, lazy, concept), score_sorted(names, eager, concept)
    assert all(torch.equal(a[c], b[c]) for c in b)
    assert lazy.select([4, 1]).ties is None
    assert torch.equal(lazy.to_tensors()["ties"], eager.ties)
    assert score_all(["auc", "mad"], control, concept)["auc"].tolist() == b["auc"].tolist()
