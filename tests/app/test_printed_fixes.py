"""Every fix the input check and the error hints print works as typed in the headline sweep
(issue #19, item 1): ``-m model=resnet18,vit_b16 explainer=invert,clip_dissect,milan FIX``
composes its base (from the toy world: Hydra skips sweep overrides there) and every job.

The fixes are collected from the code that prints them: the input check on every job of the
sweep offline, the open_clip loader's and the concept sets' error hints, and the overrides
of the code blocks of ``docs/real_models.md``'s section on the paper's setup."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from helpers import CONF, REPO, compose_config, no_network
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode

from cosy_bench.app import inputs
from cosy_bench.app.inputs import missing_inputs

SWEEP = {"model": ["resnet18", "vit_b16"], "explainer": ["invert", "clip_dissect", "milan"]}
SWEEP_ARGS = [f"{k}={','.join(v)}" for k, v in SWEEP.items()]
JOBS = [[f"model={m}", f"explainer={e}"] for m, e in itertools.product(*SWEEP.values())]
DATA_ENV = ("IMAGENET_VAL_DIR", "IMAGENET_TRAIN_DIR", "PLACES365_VAL_DIR", "HF_HUB_CACHE")
DOC = REPO / "docs" / "real_models.md"
DOC_SECTION = "## The paper's setup on a GPU machine"
README_SECTION = "## The headline command"

#: ``key=value`` in a printed text: a config key (or group) and a value, a ``<placeholder>``
FIX = re.compile(r"(?<![\w.+/-])([a-z_][\w]*(?:[./][\w]+)*)=(<[^>]*>|[^\s,;)`'\"]+)")


def overrides_in(text: str) -> list[tuple[str, str]]:
    """The ``key=value`` overrides a message or document prints (not ``export VAR=...``)."""
    found = []
    for match in FIX.finditer(text):
        before = text[max(0, match.start() - 7):match.start()]
        if "export" in before or match.group(1).isupper():
            continue
        found.append((match.group(1), match.group(2)))
    return found


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """Empty caches, no data folders, no network."""
    for name in DATA_ENV:
        monkeypatch.delenv(name, raising=False)
    for var, sub in (("HOME", "home"), ("TORCH_HOME", "torch"), ("HF_HOME", "hf"),
                     ("COSY_CACHE_DIR", "cache")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    inputs.reachable.cache_clear()
    with no_network():
        yield tmp_path
    inputs.reachable.cache_clear()


def _printed_fixes(monkeypatch, tmp: Path) -> set[tuple[str, str]]:
    """The input check's fixes on every job of the sweep, offline, also with local paths
    that do not exist (their own messages), and the loaders' error hints."""
    texts = []
    for job in JOBS:
        for extra in ([], ["model.weights=/missing/w.pth", "generator.model_id=/missing/sdxl",
                           "clip.pretrained=/missing/clip.pt", "concepts.path=/missing/c.txt",
                           "model.milan_checkpoint=/missing/m.pkl"], ["model.weights=/x/w.ckpt"]):
            texts += [m.fix for m in missing_inputs(compose_config([*job, *extra]))]
    from cosy_bench.models.clip import open_clip_model
    from cosy_bench.models.loaders import WeightsUnavailableError

    with pytest.raises(WeightsUnavailableError) as err:
        open_clip_model("ViT-B-16", "/missing/clip.pt")
    texts.append(str(err.value))
    from cosy_bench.explainers import concept_sets

    hints = []
    monkeypatch.setattr(concept_sets, "download_text",
                        lambda url, target, what, hint: hints.append(hint) or 1 / 0)
    for fn in (concept_sets.common_words, concept_sets.broden_labels):
        with pytest.raises(ZeroDivisionError):
            fn()
    texts += hints
    from cosy_bench.data.probe import LabelledImageFolder

    folder = tmp / "probe"
    (folder / "dogs").mkdir(parents=True)  # a class folder not named by its wnid
    with pytest.raises(ValueError) as err:
        LabelledImageFolder(str(folder), names_from_model=True)
    texts.append(str(err.value))
    section = DOC.read_text().split(DOC_SECTION, 1)[1].split("\n## ", 1)[0]
    texts += re.findall(r"```(?:bash|sh|console)?\n(.*?)```", section, re.S)
    # the README's headline section: the inputs a GPU user supplies, in backticks
    readme = (REPO / "README.md").read_text().split(README_SECTION, 1)[1].split("\n## ", 1)[0]
    texts += re.findall(r"`([^`\n]*=[^`\n]*)`", readme)
    from cosy_bench.explainers.milan.checkpoints import load_captioner

    with pytest.raises(FileNotFoundError) as err:  # the MILAN loader's own hint
        load_captioner("/missing/milan.pth")
    texts.append(str(err.value))
    return {fix for text in texts for fix in overrides_in(text)}


def _value(value: str, tmp: Path) -> str:
    """A placeholder or example path made real: a folder, or a file for file-like names."""
    if not (value.startswith(("<", "/")) or value == "..."):
        return value
    if any(w in value for w in ("folder", "images", "DIR", "root", "val", "train")):
        return str(tmp)
    path = tmp / "input.file"
    path.write_text("x")
    return str(path)


def _compose_sweep_base(overrides: list[str]) -> None:
    """Hydra's composition of a ``-m`` sweep's base config (sweep overrides skipped)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        GlobalHydra.instance().config_loader().load_configuration(
            "config", overrides, run_mode=RunMode.MULTIRUN)


def test_overrides_in_reads_fixes_not_shell_variables():
    text = ("generator.model_id=<local pipeline folder>, or generator=tiny; "
            "dataset.root=/path/to/images or export IMAGENET_VAL_DIR=/path/to/images")
    assert overrides_in(text) == [("generator.model_id", "<local pipeline folder>"),
                                  ("generator", "tiny"), ("dataset.root", "/path/to/images")]


@pytest.mark.slow  # about 40 compositions
def test_every_printed_fix_composes_in_the_headline_sweep(offline, monkeypatch):
    fixes = _printed_fixes(monkeypatch, offline)
    keys = {k for k, _ in fixes}
    # the fixes this sweep needs are among them (they are collected, not listed by hand)
    assert {"generator.model_id", "clip.pretrained", "concepts.path", "dataset.root",
            "probe.root", "model.milan_checkpoint", "model.weights",
            "probe.names_from_model", "trainer", "debug"} <= keys, keys
    # hints name the run's groups, not the explainer's interpolated copies of them
    assert not {k for k in keys if k.startswith(("explainer.clip", "explainer.concepts",
                                                 "explainer.probe", "explainer/"))}
    # one value per key (a key composes alike for any value of its kind); the config keys
    # together on the sweep's base and every job, each group choice alone (they may exclude
    # one another: generator=tiny has no model_id) on the base and a job per model
    values = {key: _value(value, offline) for key, value in sorted(fixes)}
    keys_at_once = [f"{k}={v}" for k, v in values.items() if "." in k]
    trials = [(keys_at_once, JOBS)] + [([f"{k}={v}"], [JOBS[0], JOBS[-1]])
                                       for k, v in values.items() if "." not in k]
    failed = []
    for overrides, jobs in trials:
        try:
            _compose_sweep_base([*SWEEP_ARGS, *overrides])
            for job in jobs:
                compose_config([*job, *overrides])
        except Exception as err:  # noqa: BLE001 - every failure is listed below
            failed.append(f"{overrides}: {type(err).__name__}: {str(err).splitlines()[0]}")
    assert not failed, "\n".join(failed)


def test_the_headline_sweep_composes_with_every_local_input_at_once(offline):
    folder = offline / "inputs"
    folder.mkdir()
    local = [f"generator.model_id={folder}", "generator.num_inference_steps=2",
             f"clip.pretrained={folder}/clip.pt", f"concepts.path={folder}/c.txt",
             f"dataset.root={folder}", f"probe.root={folder}", "model.weights=null",
             f"model.milan_checkpoint={folder}/milan.pkl"]
    _compose_sweep_base([*SWEEP_ARGS, *local])
    cfg = compose_config([*JOBS[-1], *local])
    assert cfg.explainer.checkpoint == f"{folder}/milan.pkl"
    assert cfg.generator.model_id == str(folder) and cfg.generator.num_inference_steps == 2


def test_a_toy_world_job_given_a_real_input_is_refused_by_name():
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    cfg = compose_config(["generator.model_id=/models/sdxl", "dataset.root=/data/val"])
    with pytest.raises(InstantiationException, match=r"generator.model_id=/models/sdxl: the toy world"):
        instantiate(cfg.generator)
    with pytest.raises(InstantiationException, match=r"dataset.root=/data/val"):
        instantiate(cfg.dataset, n=2)
