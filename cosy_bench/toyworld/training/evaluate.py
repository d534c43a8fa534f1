"""Checks of a toy CNN on freshly rendered data: accuracy, concept AUROC, CoSy-style AUC."""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata

from cosy_bench.generators.base import image_seed
from cosy_bench.prompts import make_prompt
from cosy_bench.toyworld.data import ToyControlSet
from cosy_bench.toyworld.generator import ToyWorldGenerator
from cosy_bench.toyworld.model import ToyCNN, preprocess
from cosy_bench.toyworld.render import render_batch_with_classes
from cosy_bench.toyworld.vocab import CLASS_NAMES, CONCEPTS

#: Stream seed offsets: held-out test scenes never share a stream with training scenes.
TEST_STREAM = 2_000_000


def auroc_columns(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """ROC AUC of each column (ties count 1/2, as scikit-learn's ``roc_auc_score``).

    Args:
        scores: float [N, K].
        labels: bool [N, K]; a column without both classes gets NaN.

    Returns:
        float64 [K].
    """
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    ranks = rankdata(scores, axis=0)
    n_pos = labels.sum(0)
    n_neg = labels.shape[0] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        u = (ranks * labels).sum(0) - n_pos * (n_pos + 1) / 2
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def cosy_auc(control: np.ndarray, synthetic: np.ndarray) -> float:
    """CoSy's AUC: fraction of (control, synthetic) pairs with control < synthetic, ties 1/2.

    Args:
        control: float [n] activations on control images (A0).
        synthetic: float [m] activations on explanation images (A1).
    """
    a0 = np.sort(np.asarray(control, dtype=np.float64))
    a1 = np.asarray(synthetic, dtype=np.float64)
    below = np.searchsorted(a0, a1, side="left")
    not_above = np.searchsorted(a0, a1, side="right")
    return float((below + not_above).sum() / (2 * a0.size * a1.size))


@torch.no_grad()
def activations(model: ToyCNN, images: np.ndarray, batch_size: int = 256
                ) -> tuple[np.ndarray, np.ndarray]:
    """Class logits float32 [N, n_classes] and concept logits float32 [N, C] of uint8 images
    [N, H, W, 3]."""
    model.eval()
    outs, cons = [], []
    for start in range(0, len(images), batch_size):
        logits, concepts = model.forward_both(preprocess(images[start : start + batch_size]))
        outs.append(logits.numpy())
        cons.append(concepts.numpy())
    return np.concatenate(outs), np.concatenate(cons)


def evaluate(model: ToyCNN, n: int = 2000, seed: int = 0) -> dict:
    """Accuracy and per-concept AUROC on ``n`` fresh random scenes of test stream ``seed``.

    Returns:
        ``{"n", "stream_seed", "accuracy", "concept_auroc": {concept: auroc},
        "concept_auroc_min", "concept_auroc_mean"}``.
    """
    stream = TEST_STREAM + seed
    images, labels, classes = render_batch_with_classes(n, stream)
    logits, concept_logits = activations(model, images)
    aurocs = auroc_columns(concept_logits, labels)
    return {
        "n": n,
        "stream_seed": stream,
        "accuracy": float((logits.argmax(1) == classes).mean()),
        "concept_auroc": {c: round(float(a), 5) for c, a in zip(CONCEPTS, aurocs, strict=True)},
        "concept_auroc_min": float(np.nanmin(aurocs)),
        "concept_auroc_mean": float(np.nanmean(aurocs)),
    }


def _auc_matrix(control: np.ndarray, synthetic: np.ndarray) -> np.ndarray:
    """AUC[k, e] of unit k: control [n, K] vs images of explanation e, synthetic [E, m, K]."""
    n_units = control.shape[1]
    return np.array([[cosy_auc(control[:, k], synthetic[e, :, k])
                      for e in range(synthetic.shape[0])] for k in range(n_units)])


def cosy_check(model: ToyCNN, n_images: int = 50, n_control: int = 2000,
               template: str = "p5") -> dict:
    """CoSy with true and wrong explanations of the ``concepts`` units and the ``fc`` units.

    Unit ``j`` of ``concepts`` is explained by ``CONCEPTS[j]`` and unit ``k`` of ``fc`` by
    ``CLASS_NAMES[k]``; ``n_images`` images per explanation come from
    :class:`ToyWorldGenerator` with the prompt ``make_prompt(template, explanation)``, the
    control data is ``ToyControlSet(n_control)``. The AUC of every unit against every other
    explanation of the same layer estimates what wrong explanations score.

    Returns:
        per layer (``"concepts"``, ``"output"``): ``auc_true_mean``, ``auc_true_min``,
        ``auc_wrong_mean`` and ``auc_true`` (per unit).
    """
    control = ToyControlSet(n_control)
    ctrl_logits, ctrl_concepts = activations(model, control.images)
    generator = ToyWorldGenerator()
    result = {"template": template, "n_images": n_images, "control": control.name}
    for layer, names, ctrl, pick in (
        ("concepts", CONCEPTS, ctrl_concepts, 1),
        ("output", CLASS_NAMES, ctrl_logits, 0),
    ):
        synthetic = []
        for name in names:
            prompt = make_prompt(template, name)
            images = np.stack([
                generator.render(prompt, image_seed(name, prompt, i), with_masks=False).image
                for i in range(n_images)
            ])
            synthetic.append(activations(model, images)[pick])
        aucs = _auc_matrix(ctrl, np.stack(synthetic))
        true = np.diag(aucs)
        wrong = aucs[~np.eye(len(names), dtype=bool)]
        result[layer] = {
            "auc_true_mean": float(true.mean()),
            "auc_true_min": float(true.min()),
            "auc_wrong_mean": float(wrong.mean()),
            "auc_true": {n: round(float(a), 4) for n, a in zip(names, true, strict=True)},
        }
    return result
