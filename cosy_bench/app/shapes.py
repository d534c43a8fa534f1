"""Before a run starts, without building the model: is its layer one the model has, are its
``neurons.ids`` units of that layer, and does its control set hold enough images?

:func:`shape_problems` builds the model's architecture on PyTorch's ``meta`` device (no
weights are read, no memory is allocated: milliseconds even for a ViT), resolves the layer
as the pipeline does (:func:`cosy_bench.models.factory.resolve_layer`) and reads the
layer's number of units K from one forward pass on a meta tensor. The control set is
counted (a folder is listed, no image is read; a generated set's ``n`` is read from its
config): CoSy's MAD divides by the control's standard deviation, so it needs at least 2
images, every other score 1. Every dataset (``dataset=...``), not only the toy one.

Each problem is one :class:`~cosy_bench.app.problems.Missing` (what is wrong and the fix);
:func:`cosy_bench.app.inputs.check_inputs` reports them with the missing inputs. A model
whose architecture cannot be built on the meta device (a torch.hub repository not in its
cache, a loader that reads weights anyway) is not checked here: the run reports it.
"""

from __future__ import annotations

import copy
import logging
import warnings

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from cosy_bench.app.problems import Missing

log = logging.getLogger("cosy_bench")

#: scorers whose statistic needs at least two control images (a standard deviation)
NEEDS_TWO_CONTROLS = ("mad",)


def _meta_units(cfg: DictConfig) -> tuple[object | None, int | None]:
    """(the model bundle built on ``meta``, or None; K of ``cfg.layer.name``, or None).
    Raises ValueError (from ``resolve_layer``) when the model has no such layer."""
    import torch
    from PIL import Image

    from cosy_bench.models.factory import create_model
    from cosy_bench.models.layers import LayerExtractor

    full = copy.deepcopy(cfg)
    with open_dict(full):
        full.model.weights = None  # the architecture only: ${model.weights} reads it
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bundle = create_model(full.model, seed=int(cfg.get("seed", 0)))
    except Exception as err:  # noqa: BLE001 - not checkable here; the run reports it
        log.debug("layer check skipped: the model cannot be built on meta (%s)", err)
        return None, None
    spec = bundle.layer(cfg.layer.get("name"))  # ValueError: no such layer
    try:
        x = bundle.transform(Image.new("RGB", (256, 256), (127, 127, 127)))[None]
        with torch.no_grad():
            out = LayerExtractor(bundle.module, spec)(x.to("meta"))
        return bundle, int(out.shape[1])
    except Exception as err:  # noqa: BLE001 - an op without a meta kernel: count in the run
        log.debug("neuron count skipped: the layer cannot run on meta (%s)", err)
        return bundle, None


def layer_problems(cfg: DictConfig) -> list[Missing]:
    """``layer.name`` unknown to the model, or ``neurons.ids`` outside the layer's units."""
    if OmegaConf.select(cfg, "model.build") is None or "layer" not in cfg:
        return []
    try:
        bundle, k = _meta_units(cfg)
    except ValueError as err:
        name = cfg.layer.get("name")
        return [Missing(f"layer {name!r}: {err}",
                        "layer=<one of the model's layers above>, or layer.name=<module path>")]
    ids = OmegaConf.select(cfg, "neurons.ids")
    if bundle is None or k is None or ids is None:
        return []
    bad = [int(i) for i in ids if not 0 <= int(i) < k]
    if not bad:
        return []
    layer = cfg.layer.get("name") or bundle.default_layer
    return [Missing(f"neurons.ids {bad}: layer {layer!r} of {bundle.name!r} has {k} neurons "
                    f"(0..{k - 1})",
                    f"neurons.ids=[...] with ids in 0..{k - 1}, or neurons=all")]


def _fix(cfg: DictConfig) -> str:
    if OmegaConf.select(cfg, "dataset.root") is not None:
        return "dataset.root=<a folder with at least 2 images>"
    if OmegaConf.select(cfg, "dataset.n") is not None:
        return "dataset.n=<at least 2> (the default: 2000)"
    return "a control set (dataset=...) with at least 2 images"


def control_problems(cfg: DictConfig) -> list[Missing]:
    """A control set (``dataset``) with too few images for the run's scorers."""
    node = cfg.get("dataset")
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return []
    scorers = [str(s) for s in (cfg.get("scorer") or {})]
    need = 2 if any(s in NEEDS_TWO_CONTROLS for s in scorers) else 1
    name = f"dataset {node.get('name', '')}".rstrip()
    where = f" (dataset.root={node.root})" if node.get("root") is not None else ""
    try:  # a generated set (toy scenes, synthetic): its size, without rendering it
        n = int(node.n) if node.get("root") is None and isinstance(node.get("n"), int) \
            else len(instantiate(node))  # a folder: listed, no image read
    except (ValueError, InstantiationException) as err:
        cause = err.__cause__ or err
        if "holds no images" not in str(cause):
            log.debug("control set not counted: %s", cause)
            return []
        n = 0
    except (OSError, TypeError) as err:  # a missing folder is check_folder's to report
        log.debug("control set not counted: %s", err)
        return []
    if n >= need:
        return []
    why = " (MAD divides by the control's standard deviation)" if need == 2 else ""
    return [Missing(f"{name}{where}: the control set holds {n} image(s), this run needs at "
                    f"least {need}{why}", _fix(cfg))]


def shape_problems(cfg: DictConfig) -> list[Missing]:
    """Every problem of the layer, the neurons and the control set, before any model is built."""
    return layer_problems(cfg) + control_problems(cfg)
