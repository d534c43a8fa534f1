"""Builders of the networks under study, one per source. Each returns an ``nn.Module``.

``weights`` is a torchvision weights name (``IMAGENET1K_V1``, ``DEFAULT``), a URL, a local
path, or ``None`` for random initialisation (offline; seeded by the caller).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

OFFLINE_HINT = (
    "This machine could not obtain the weights. Run offline with random weights "
    "(`model.weights=null`, or `debug=smoke`), or use the embedded toy world "
    "(`model=toy_cnn`, the default config)."
)


#: the local weights files read as state dicts (``.safetensors`` through safetensors, the
#: others through ``torch.load(weights_only=True)``)
WEIGHTS_SUFFIXES = frozenset({".pth", ".pt", ".tar", ".bin", ".safetensors"})


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be downloaded or read."""


def _is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def read_state_dict(spec: str, *, key: str | None = None, strip_prefix: str = "") -> dict:
    """Read a state dict from a URL (into torch's hub cache) or a local file
    (:data:`WEIGHTS_SUFFIXES`; ``.safetensors`` through safetensors).

    Loads with ``weights_only=True``: tensors and plain containers only, no arbitrary pickles.
    ``key`` selects a nested entry (``"state_dict"`` for the CSAIL Places365 checkpoints);
    ``strip_prefix`` removes e.g. DataParallel's ``module.``.
    """
    try:
        if _is_url(spec):
            obj = torch.hub.load_state_dict_from_url(spec, map_location="cpu", weights_only=True)
        else:
            spec = os.path.expanduser(spec)
            if not Path(spec).exists():
                raise FileNotFoundError(f"weights file not found: {spec}")
            try:
                if Path(spec).suffix.lower() == ".safetensors":
                    from safetensors.torch import load_file

                    obj = load_file(spec, device="cpu")
                else:
                    obj = torch.load(spec, map_location="cpu", weights_only=True)
            except Exception as err:  # a local file that does not load: damaged, not offline
                raise WeightsUnavailableError(
                    f"weights file {spec} is damaged or not a PyTorch checkpoint "
                    f"({type(err).__name__}: {err}); set `model.weights` to an intact file"
                ) from err
    except WeightsUnavailableError:
        raise
    except FileNotFoundError as err:
        raise WeightsUnavailableError(f"{err}. Set `model.weights` to an existing file. "
                                      f"{OFFLINE_HINT}") from err
    except Exception as err:  # network errors come in many types
        raise WeightsUnavailableError(f"could not load weights {spec!r}: {err}. {OFFLINE_HINT}") from err
    if key is not None and key in obj:
        obj = obj[key]
    if strip_prefix:
        obj = {k.removeprefix(strip_prefix): v for k, v in obj.items()}
    return obj


def torchvision_model(arch: str, weights: str | None, num_classes: int | None = None,
                      state_dict_key: str | None = None, strip_prefix: str = "") -> nn.Module:
    """A torchvision architecture; ``weights`` a torchvision weights name, URL, path or None."""
    from torchvision import models as tvm

    try:
        builder = tvm.get_model_builder(arch)
    except ValueError as err:
        raise ValueError(f"unknown torchvision architecture model.arch={arch!r}; "
                         f"choose one of torchvision.models.list_models()") from err
    local = weights is not None and not _is_url(str(weights)) and (
        "/" in str(weights) or Path(str(weights)).expanduser().is_file())
    if local and Path(str(weights)).suffix.lower() not in WEIGHTS_SUFFIXES:
        raise WeightsUnavailableError(
            f"model.weights={weights}: not a weights format this suite reads; give a state "
            f"dict file ({', '.join(sorted(WEIGHTS_SUFFIXES))}) or a torchvision weights name")
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    if weights is None or local or _is_url(weights) or Path(str(weights)).suffix.lower() in \
            WEIGHTS_SUFFIXES:
        model = builder(weights=None, **kwargs)
        if weights is not None:
            sd = read_state_dict(weights, key=state_dict_key, strip_prefix=strip_prefix)
            model.load_state_dict(_remap_legacy_densenet(sd), strict=True)
        return model
    try:
        return builder(weights=weights)
    except Exception as err:
        raise WeightsUnavailableError(
            f"could not load torchvision weights {arch}:{weights}: {err}. {OFFLINE_HINT}"
        ) from err


def _remap_legacy_densenet(sd: dict) -> dict:
    """Old DenseNet checkpoints (CSAIL Places365) name layers ``norm.1``; torchvision ``norm1``."""
    import re

    pattern = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")
    out = {}
    for k, v in sd.items():
        m = pattern.match(k)
        out[m.group(1) + m.group(2) if m else k] = v
    return out


def hub_model(repo: str, entry: str, weights: str | None, offline_arch: str | None = None) -> nn.Module:
    """A torch.hub model (e.g. DINO). ``weights=None`` builds ``offline_arch`` (timm) randomly.

    The hub code itself needs the network; the timm architecture named by ``offline_arch``
    has the same module names, so layers resolve identically offline.
    """
    if weights is None:
        if offline_arch is None:
            raise ValueError(f"hub model {repo}:{entry} has no offline architecture "
                             "(model.build.offline_arch) for random initialisation")
        import timm

        return timm.create_model(offline_arch, pretrained=False, num_classes=0)
    try:
        return torch.hub.load(repo, entry, pretrained=True)
    except Exception as err:
        raise WeightsUnavailableError(f"torch.hub could not load {repo}:{entry}: {err}. "
                                      f"{OFFLINE_HINT}") from err


def timm_model(name: str, weights: str | None, num_classes: int | None = None) -> nn.Module:
    """Any timm model: ``weights`` ``pretrained`` (timm's hub weights), a path/URL, or None."""
    import timm

    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    if weights is None:
        return timm.create_model(name, pretrained=False, **kwargs)
    if weights == "pretrained":
        try:
            return timm.create_model(name, pretrained=True, **kwargs)
        except Exception as err:
            raise WeightsUnavailableError(f"timm could not load pretrained {name}: {err}. "
                                          f"{OFFLINE_HINT}") from err
    model = timm.create_model(name, pretrained=False, **kwargs)
    model.load_state_dict(read_state_dict(weights), strict=True)
    return model
