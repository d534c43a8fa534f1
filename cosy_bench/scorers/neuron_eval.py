"""NeuronEval's metrics (Oikarinen, Yan & Weng, ICML 2025; Trustworthy-ML-Lab/Neuron_Eval
``metrics.py``) as scorers in CoSy's setting.

The probe set of a neuron is ``D = control (N) + concept (M)``, its concept vector
``c = [0] * N + [1] * M`` and its activation vector ``a``. Every scorer takes ``control
[N, K]`` and ``concept [M, K]`` (column ``k`` = neuron ``k`` on its own explanation's images)
and returns float64 ``[K]``, vectorised over neurons:

* ``correlation``: Pearson of ``a`` and ``c`` (torchmetrics ``pearson_corrcoef``); NeuronEval's
  ``correlation`` is this times ``(D - 1) / D`` (it standardises with the unbiased std and
  averages over ``D``);
* ``cosine``: ``a . c / (|a| |c|)``;
* ``auprc``: NeuronEval's AUPRC: average precision of ``c`` as the score for the binarised
  neuron ``a >= top-alpha cutoff`` (torchmetrics ``multilabel_average_precision``);
* ``inverse_auprc``: average precision of ``a`` as the score for ``c`` (``a`` min-max scaled
  to [0, 1] first: torchmetrics applies a sigmoid to scores outside [0, 1], which would tie
  large activations);
* ``f1``, ``iou``: F1 and Jaccard of the binarised neuron against ``c`` (torchmetrics
  ``multilabel_f1_score``, ``multilabel_jaccard_index``);
* ``balanced_accuracy``: NeuronEval's ``(TP / |active| + TN / |inactive|) / 2`` over the
  binarised neuron.

Binarisation, as NeuronEval's ``_binarize_act``: a neuron is active on the top ``alpha``
fraction of ``D`` (``k = ceil(alpha |D|)``, ties at the cutoff included); ``alpha=None`` uses
the concept's frequency ``M / (N + M)``. Imports nothing else of cosy_bench.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor

__all__ = ["NEURON_EVAL", "auprc", "balanced_accuracy", "binarize", "correlation", "cosine",
           "f1", "inverse_auprc", "iou"]


def _check(control: Tensor, concept: Tensor) -> None:
    for name, x in (("control", control), ("concept", concept)):
        if not isinstance(x, Tensor) or x.ndim != 2 or 0 in x.shape:
            raise ValueError(f"{name} must be a non-empty tensor [rows, K], got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
    if control.shape[1] != concept.shape[1]:
        raise ValueError(f"control has {control.shape[1]} neurons but concept has "
                         f"{concept.shape[1]} (they must match column by column)")


def _stack(control: Tensor, concept: Tensor) -> tuple[Tensor, Tensor]:
    """``a`` float64 ``[N + M, K]`` and ``c`` long ``[N + M, K]``."""
    _check(control, concept)
    a = torch.cat([control, concept]).double()
    c = torch.zeros_like(a, dtype=torch.long)
    c[control.shape[0]:] = 1
    return a, c


def binarize(a: Tensor, alpha: float) -> Tensor:
    """long ``[D, K]``: 1 on each column's top ``alpha`` fraction (ties at the cutoff in)."""
    k = min(a.shape[0], max(1, math.ceil(alpha * a.shape[0])))
    cutoff = a.topk(k, dim=0).values[-1]
    return (a >= cutoff).long()


def _alpha(alpha: float | None, control: Tensor, concept: Tensor) -> float:
    return concept.shape[0] / (control.shape[0] + concept.shape[0]) if alpha is None else alpha


def _labelwise(kind: str, preds: Tensor, target: Tensor, **kw) -> Tensor:
    """A torchmetrics classification metric per column (``multilabel_*`` with
    ``average=None``; the ``binary_*`` one for a single column) -> float64 ``[K]``."""
    from torchmetrics.functional import classification as tmc

    if preds.shape[1] == 1:
        out = getattr(tmc, f"binary_{kind}")(preds[:, 0], target[:, 0], **kw)
    else:
        out = getattr(tmc, f"multilabel_{kind}")(preds, target, num_labels=preds.shape[1],
                                                 average=None, **kw)
    return out.double().reshape(-1)


def correlation(control: Tensor, concept: Tensor) -> Tensor:
    """Pearson correlation of activations and concept labels, ``[K]`` (0 for a constant
    neuron).

    >>> control = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    >>> concept = torch.tensor([[2.0, 1.0], [3.0, 1.0]])  # neuron 1 is constant
    >>> [round(v, 4) for v in correlation(control, concept).tolist()]
    [0.8944, 0.0]
    """
    from torchmetrics.functional import pearson_corrcoef

    a, c = _stack(control, concept)
    if a.shape[1] == 1:
        r = pearson_corrcoef(a[:, 0], c[:, 0].double()).reshape(1)
    else:
        r = pearson_corrcoef(a, c.double())
    return torch.nan_to_num(r.double(), nan=0.0)


def cosine(control: Tensor, concept: Tensor) -> Tensor:
    """Cosine of activations and concept labels, ``[K]``."""
    a, c = _stack(control, concept)
    return (a * c).sum(0) / (a.norm(dim=0) * c.double().norm(dim=0)).clamp_min(1e-12)


def auprc(control: Tensor, concept: Tensor, alpha: float | None = None) -> Tensor:
    """NeuronEval's AUPRC: average precision of the concept labels for the neuron's top-alpha
    activations, ``[K]``."""
    a, c = _stack(control, concept)
    active = binarize(a, _alpha(alpha, control, concept))
    return _labelwise("average_precision", c.double(), active, thresholds=None)


def inverse_auprc(control: Tensor, concept: Tensor) -> Tensor:
    """Average precision of the activations for the concept labels, ``[K]``."""
    a, c = _stack(control, concept)
    lo, hi = a.min(0).values, a.max(0).values
    scaled = (a - lo) / (hi - lo).clamp_min(1e-300)  # in [0, 1]: no sigmoid, no ties added
    return _labelwise("average_precision", scaled, c, thresholds=None)


def _binary(name: str, control: Tensor, concept: Tensor, alpha: float | None) -> Tensor:
    a, c = _stack(control, concept)
    active = binarize(a, _alpha(alpha, control, concept))
    return _labelwise("f1_score" if name == "f1" else "jaccard_index", active, c,
                      threshold=0.5, zero_division=0)


def f1(control: Tensor, concept: Tensor, alpha: float | None = None) -> Tensor:
    """F1 of the top-alpha binarised neuron against the concept labels, ``[K]``.

    >>> control = torch.tensor([[0.0, 5.0], [1.0, 6.0]])
    >>> concept = torch.tensor([[2.0, 0.0], [3.0, 1.0]])
    >>> f1(control, concept).tolist()  # active on the top half: the concept images, or not
    [1.0, 0.0]
    """
    return _binary("f1", control, concept, alpha)


def iou(control: Tensor, concept: Tensor, alpha: float | None = None) -> Tensor:
    """IoU (Jaccard) of the top-alpha binarised neuron and the concept labels, ``[K]``."""
    return _binary("iou", control, concept, alpha)


def balanced_accuracy(control: Tensor, concept: Tensor, alpha: float | None = None) -> Tensor:
    """NeuronEval's balanced accuracy ``(TP / |active| + TN / |inactive|) / 2``, ``[K]``."""
    a, c = _stack(control, concept)
    act = binarize(a, _alpha(alpha, control, concept)).double()
    cd = c.double()
    tp, tn = (act * cd).sum(0), ((1 - act) * (1 - cd)).sum(0)
    return (tp / act.sum(0).clamp_min(1) + tn / (1 - act).sum(0).clamp_min(1)) / 2


#: NeuronEval's metrics by name, each ``(control [N, K], concept [M, K]) -> float64 [K]``
NEURON_EVAL: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "correlation": correlation,
    "cosine": cosine,
    "auprc": auprc,
    "inverse_auprc": inverse_auprc,
    "f1": f1,
    "iou": iou,
    "balanced_accuracy": balanced_accuracy,
}

#: the metrics that binarise the neuron (they take ``alpha``)
BINARISED = ("auprc", "f1", "iou", "balanced_accuracy")


def with_alpha(name: str, alpha: float | None) -> Callable[[Tensor, Tensor], Tensor]:
    """The scorer ``name`` with a fixed ``alpha`` where it binarises."""
    fn = NEURON_EVAL[name]
    return partial(fn, alpha=alpha) if name in BINARISED else fn
