"""``create_model(cfg)``: one path for every model config (torchvision, torch.hub, timm,
Places365 checkpoints, the toy world)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cosy_bench.models.layers import LayerExtractor, LayerSpec, SpatialExtractor


@dataclass
class ModelBundle:
    """A loaded model with what the pipeline needs to know about it."""

    name: str
    module: nn.Module
    transform: object
    layers: dict[str, LayerSpec]
    default_layer: str
    weights_id: str
    class_names_cfg: object = None
    extra: dict = field(default_factory=dict)

    @cached_property
    def class_names(self) -> list[str] | None:
        cfg = self.class_names_cfg
        if cfg is None:
            return None
        if isinstance(cfg, (list, tuple)):
            return list(cfg)
        return list(instantiate(cfg))

    def layer(self, name: str | None) -> LayerSpec:
        return resolve_layer(self, name)

    def extractor(self, layer: str | None) -> LayerExtractor:
        return LayerExtractor(self.module, self.layer(layer))

    def spatial_extractor(self, layer: str | None) -> SpatialExtractor:
        """The unit maps [B, K, h, w] of ``layer`` (see :class:`SpatialExtractor`)."""
        return SpatialExtractor(self.module, self.layer(layer))

    def ground_truth(self, spec: LayerSpec) -> list[str] | None:
        """Known label of every unit of ``spec`` where the config provides one."""
        gt = spec.ground_truth
        if gt is None:
            return None
        if gt == "class_names":
            return self.class_names
        if isinstance(gt, (list, tuple)):
            return list(gt)
        return list(instantiate(gt))


def resolve_layer(bundle: ModelBundle, name: str | None) -> LayerSpec:
    """A configured layer name, else a dotted module path of the model, else a clear error."""
    name = name or bundle.default_layer
    if name in bundle.layers:
        return bundle.layers[name]
    modules = dict(bundle.module.named_modules())
    if name in modules and name:
        return LayerSpec(name=name, module=name)
    raise ValueError(
        f"model {bundle.name!r} has no layer {name!r}. Its layers: {sorted(bundle.layers)} "
        f"(or any module path, e.g. {[n for n in list(modules)[1:6]]})."
    )


def create_model(cfg: DictConfig, seed: int = 0) -> ModelBundle:
    """Build the model described by a ``conf/model`` config.

    With ``weights: null`` the network is randomly initialised under ``seed`` so that its
    cache keys (``weights_id``) identify it.
    """
    if cfg.weights is None:
        torch.manual_seed(seed)
    module = instantiate(cfg.build)
    module.eval().requires_grad_(False)
    layers = {}
    for lname, lcfg in (cfg.get("layers") or {}).items():
        lcfg = OmegaConf.to_container(lcfg, resolve=True) if lcfg is not None else {}
        layers[lname] = LayerSpec(name=lname, module=lcfg.get("module"),
                                  reduction=lcfg.get("reduction", "auto"),
                                  ground_truth=lcfg.get("ground_truth"),
                                  spatial=lcfg.get("spatial"))
    class_names = cfg.get("class_names")
    if isinstance(class_names, DictConfig):
        class_names = OmegaConf.to_container(class_names, resolve=True)
    weights_id = str(cfg.weights) if cfg.weights is not None else f"random-init-seed{seed}"
    return ModelBundle(
        name=cfg.name,
        module=module,
        transform=instantiate(cfg.preprocess),
        layers=layers,
        default_layer=cfg.default_layer,
        weights_id=weights_id,
        class_names_cfg=class_names,
    )
