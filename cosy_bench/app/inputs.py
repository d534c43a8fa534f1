"""Before a run starts: is every input it needs at hand? One clear message per missing one.

A real model's run needs its weights, a control folder (``IMAGENET_VAL_DIR``), a probe
folder, a generator, CLIP and a concept set; offline, most of them cannot be had. Rather
than failing at the first, after minutes of work, :func:`check_inputs` looks at every input
the run's config names (the model, the control set, the generator and everything the
explainer refers to: probe set, CLIP, concept set, MILAN checkpoint), without loading or
downloading anything, and raises one :class:`MissingInputsError` listing each missing
input and how to supply it.

An input that downloads on first use counts as missing only when it is not in its cache
and its server cannot be reached (a 3-second connection attempt per host). Checks are
keyed by the node's ``_target_`` (:data:`CHECKS`); ``check_inputs: false`` skips them.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf

from cosy_bench.app.problems import OFFLINE, Missing, MissingInputsError
from cosy_bench.app.shapes import shape_problems

__all__ = ["OFFLINE", "Missing", "MissingInputsError", "check_inputs", "missing_inputs"]

@cache
def reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host`` opens within ``timeout`` seconds."""
    if host == "huggingface.co" and os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _download(what: str, cached: Path | None, url: str, fix: str) -> list[Missing]:
    """Missing when neither in its cache (``cached``) nor reachable at ``url``."""
    if cached is not None and cached.exists():
        return []
    host = urlparse(url).hostname or url
    if reachable(host):
        return []
    where = f"not in the cache ({cached}) and " if cached is not None else ""
    return [Missing(f"{what}: {where}{host} cannot be reached (offline?)",
                    f"run once on a machine with internet (it is downloaded and cached), "
                    f"or {fix}", offline=True)]


def _hf_cached(repo_id: str) -> Path:
    home = Path(os.environ.get("HF_HUB_CACHE") or Path(
        os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub")
    return home / f"models--{repo_id.replace('/', '--')}"


def _local(value: str) -> bool:
    return not re.match(r"^[a-z]+://", value) and ("/" in value or value.endswith(
        (".pt", ".pth", ".tar", ".safetensors", ".bin", ".txt", ".csv")))


def _file(what: str, path: str, key: str) -> list[Missing]:
    if Path(os.path.expanduser(path)).exists():
        return []
    return [Missing(f"{what}: {path} does not exist", f"set {key} to an existing file")]


# ---- one check per _target_: (node, config key of the node) -> missing inputs ----


def _torch_hub_file(url: str) -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def _weights_fix(key: str) -> str:
    return f"{key}.weights=<local file>, or {key}.weights=null (random weights)"


def check_torchvision(node: DictConfig, key: str) -> list[Missing]:
    from cosy_bench.models.loaders import WEIGHTS_SUFFIXES

    weights = node.get("weights")
    if weights is None:
        return []
    weights = str(weights)
    if _local(weights) and Path(weights).suffix.lower() not in WEIGHTS_SUFFIXES:
        return [Missing(f"model weights {weights}: not a weights format this suite reads",
                        "model.weights=<a state dict file: "
                        + ", ".join(sorted(WEIGHTS_SUFFIXES)) + ">")]
    if _local(weights):
        return _file(f"model weights {weights}", weights, "model.weights")
    if weights.startswith(("http://", "https://")):
        url = weights
    else:
        from torchvision.models import get_model_weights

        try:
            url = get_model_weights(node.arch)[weights].url
        except (KeyError, ValueError):
            return [Missing(f"model weights {node.arch}:{weights}: torchvision has no such "
                            "weights", "a name of torchvision.models.get_model_weights(arch)")]
    return _download(f"model weights {node.get('arch', '')} {weights}", _torch_hub_file(url),
                     url, "copy the file to that path, or " + _weights_fix("model"))


def check_hub(node: DictConfig, key: str) -> list[Missing]:
    import torch

    if node.get("weights") is None:
        return []
    owner, name = str(node.repo).split(":")[0].split("/")
    repo_dir = Path(torch.hub.get_dir()) / f"{owner}_{name}_main"
    return _download(f"torch.hub model {node.repo}:{node.entry}", repo_dir,
                     "https://github.com", _weights_fix("model"))


def check_timm(node: DictConfig, key: str) -> list[Missing]:
    weights = node.get("weights")
    if weights is None:
        return []
    if weights != "pretrained":
        return _file(f"model weights {weights}", str(weights), "model.weights") if _local(
            str(weights)) else []
    return _download(f"timm weights of {node.name}", None, "https://huggingface.co",
                     _weights_fix("model"))


def _local_folder(name: str) -> bool:
    """A path, not a hub id (``owner/name``): absolute, home- or dot-relative, or deeper."""
    return name.startswith(("/", "~", ".")) or name.count("/") > 1 or "\\" in name


def check_diffusers(node: DictConfig, key: str) -> list[Missing]:
    model_id = str(node.model_id)
    if Path(os.path.expanduser(model_id)).is_dir():
        return []
    if _local_folder(model_id):
        return [Missing(f"generator {model_id}: folder does not exist",
                        "generator.model_id=<local pipeline folder (save_pretrained layout, "
                        "model_index.json inside)>")]
    return _download(f"generator {model_id}", _hf_cached(model_id), "https://huggingface.co",
                     "generator.model_id=<local pipeline folder>, or generator=tiny "
                     "(random offline pipeline)")


def check_open_clip(node: DictConfig, key: str) -> list[Missing]:
    pretrained = node.get("pretrained")
    if pretrained is None:
        return []
    if _local(str(pretrained)):
        return _file(f"CLIP weights {pretrained}", str(pretrained), f"{key}.pretrained")
    import open_clip

    cfg = open_clip.get_pretrained_cfg(node.model_name, pretrained) or {}
    fix = f"{key}.pretrained=<local file>, or clip=random (random CLIP)"
    if cfg.get("hf_hub"):
        return _download(f"CLIP {node.model_name}/{pretrained}",
                         _hf_cached(cfg["hf_hub"].rstrip("/")), "https://huggingface.co", fix)
    if cfg.get("url"):
        cached = Path.home() / ".cache" / "clip" / Path(urlparse(cfg["url"]).path).name
        return _download(f"CLIP {node.model_name}/{pretrained}", cached, cfg["url"], fix)
    return [Missing(f"CLIP {node.model_name}/{pretrained}: open_clip does not know it",
                    "a pair of open_clip.list_pretrained()")]


def _concept_file(filename: str, url: str, node: DictConfig, key: str) -> list[Missing]:
    from cosy_bench.cache.store import default_cache_dir

    if node.get("path"):
        return _file(f"concept set {node.path}", str(node.path), f"{key}.path")
    return _download(f"concept set {filename}", default_cache_dir() / "concept_sets" / filename,
                     url, f"{key}.path=<one concept per line>, or concepts=imagenet_classes")


def check_common_words(node: DictConfig, key: str) -> list[Missing]:
    from cosy_bench.explainers.concept_sets import COMMON_WORDS_URL

    return _concept_file(f"{node.n}.txt", COMMON_WORDS_URL.format(n=node.n), node, key)


def check_broden(node: DictConfig, key: str) -> list[Missing]:
    from cosy_bench.explainers.concept_sets import BRODEN_URL

    return _concept_file("broden_labels_clean.txt", BRODEN_URL, node, key)


def _env_of(node: DictConfig, field: str) -> str | None:
    raw = OmegaConf.to_container(node, resolve=False).get(field)
    match = re.search(r"oc\.env:(\w+)", str(raw))
    return match.group(1) if match else node.get("env")


def check_folder(node: DictConfig, key: str) -> list[Missing]:
    root, env, name = node.get("root"), _env_of(node, "root"), node.get("name", key)
    how = f"{key}.root=/path/to/images" + (f" or export {env}=/path/to/images" if env else "")
    if root in (None, ""):
        return [Missing(f"{key} {name}: no folder given" + (f" ({env} is not set)" if env
                                                                else ""), how, offline=True)]
    if not Path(os.path.expanduser(str(root))).is_dir():
        return [Missing(f"{key} {name}: folder {root} does not exist", how, offline=True)]
    return []


def check_milan(node: DictConfig, key: str) -> list[Missing]:
    from cosy_bench.explainers.milan.checkpoints import PUBLISHED

    ckpt = str(node.checkpoint)
    raw = str(OmegaConf.to_container(node, resolve=False).get("checkpoint"))
    # the yaml's default reads model.milan_checkpoint: that key works in a sweep over mixed
    # explainers (explainer.checkpoint exists only when explainer=milan)
    key = "model.milan_checkpoint" if "model.milan_checkpoint" in raw else f"{key}.checkpoint"
    if ckpt in PUBLISHED:
        from cosy_bench.cache.store import default_cache_dir

        url = PUBLISHED[ckpt]
        return _download(f"MILAN checkpoint {ckpt}",
                         default_cache_dir() / "milan" / Path(urlparse(url).path).name, url,
                         f"{key}=<file path>, or {key}=random")
    return [] if ckpt in ("toyworld", "random") else _file(
        f"MILAN checkpoint {ckpt}", ckpt, key)


def check_precomputed(node: DictConfig, key: str) -> list[Missing]:
    return _file(f"explanations {node.path}", str(node.path), f"{key}.path")


CHECKS: dict[str, Callable[[DictConfig, str], list[Missing]]] = {
    "cosy_bench.models.loaders.torchvision_model": check_torchvision,
    "cosy_bench.models.loaders.hub_model": check_hub,
    "cosy_bench.models.loaders.timm_model": check_timm,
    "cosy_bench.generators.diffusers.DiffusersGenerator": check_diffusers,
    "cosy_bench.models.clip.open_clip_model": check_open_clip,
    "cosy_bench.explainers.concept_sets.common_words": check_common_words,
    "cosy_bench.explainers.concept_sets.broden_labels": check_broden,
    "cosy_bench.data.ImageFolder": check_folder,
    "cosy_bench.data.probe.LabelledImageFolder": check_folder,
    "cosy_bench.explainers.milan.MilanExplainer": check_milan,
    "cosy_bench.explainers.precomputed.PrecomputedExplainer": check_precomputed,
}

#: the config nodes a CoSy run reads (the explainer's refer to probe, clip, concepts)
RUN_NODES = ("model.build", "dataset", "generator", "explainer")


def _nodes(cfg: DictConfig, key: str) -> Iterator[tuple[str, DictConfig]]:
    node = OmegaConf.select(cfg, key, throw_on_missing=False)
    if not isinstance(node, DictConfig):
        return
    yield key, node
    for child in node.keys():
        if OmegaConf.is_missing(node, child):
            continue
        if isinstance(node.get(child), DictConfig):
            yield from _nodes(cfg, f"{key}.{child}")


def _mandatory(cfg: DictConfig, key: str, node: DictConfig) -> list[Missing]:
    return [Missing(f"{key}.{child} is not set (??? in its yaml)",
                    f"add {key}.{child}=... to the command line")
            for child in node.keys() if OmegaConf.is_missing(node, child)]


def missing_inputs(cfg: DictConfig, nodes: tuple[str, ...] = RUN_NODES) -> list[Missing]:
    """Every missing input of the config nodes ``nodes`` (and the nodes under them)."""
    out: list[Missing] = []
    for top in nodes:
        for key, node in _nodes(cfg, top):
            # report a node once: the explainer's probe is the run's probe
            label = {"explainer.probe": "probe", "explainer.clip": "clip",
                     "explainer.concepts": "concepts"}.get(key, key)
            found = _mandatory(cfg, label, node)
            check = CHECKS.get(str(node.get("_target_", "")))
            if check is not None and not found:
                found = check(node, label)
            out += [m for m in found if m not in out]
    return out


def check_inputs(cfg: DictConfig) -> None:
    """Raise :class:`MissingInputsError` when an input of the run is missing or wrong (also
    the layer, ``neurons.ids`` and the control set's size: ``cosy_bench/app/shapes.py``)."""
    if not cfg.get("check_inputs", True):
        return
    missing = missing_inputs(cfg)
    missing += [m for m in shape_problems(cfg) if m not in missing]
    if missing:
        raise MissingInputsError(missing)
