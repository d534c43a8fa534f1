"""Sweep job folders are named by short overrides, and a run records what generated its
images (issue #19, items 5 and 6)."""

from __future__ import annotations

from helpers import compose_config
from omegaconf import OmegaConf, open_dict

from cosy_bench.cache.fingerprint import short_overrides, short_value
from cosy_bench.generators.base import generator_id, hub_revision
from cosy_bench.record import run_meta


def test_paths_in_job_names_become_base_name_and_hash():
    long = "/data/" + "deep/" * 60 + "sdxl-tiny"
    name = short_overrides(f"explainer=invert,generator.model_id={long},neurons.ids=[0,1]")
    # what tells the jobs apart first, shortened paths after
    assert name.startswith("explainer=invert,neurons.ids=[0,1],generator.model_id=sdxl-tiny-")
    assert "/" not in name
    assert short_value(long) != short_value(long.replace("deep", "Deep"))  # the hash tells
    assert short_value("IMAGENET1K_V1") == "IMAGENET1K_V1"
    huge = ",".join(f"k{i}=/x/{'a' * 300}{i}" for i in range(9))
    assert len(short_overrides(huge).encode()) <= 200
    assert short_overrides(huge) != short_overrides(huge.replace("a8", "b8"))


def test_hydra_names_sweep_jobs_through_the_resolver():
    import hydra_plugins.cosy_bench_plugins  # noqa: F401 - registers cosy_short

    raw = OmegaConf.load("conf/hydra/default.yaml")
    subdir = OmegaConf.to_container(raw, resolve=False)["sweep"]["subdir"]
    assert "${cosy_short:${hydra.job.override_dirname}}" in subdir
    node = OmegaConf.create({"d": "model=vit_b16,probe.root=/data/imagenet/train",
                             "s": "${cosy_short:${d}}"})
    assert node.s.startswith("model=vit_b16,probe.root=train-")


def test_the_generator_is_recorded_by_hub_id_or_folder_and_content(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "no-hub"))
    cfg = compose_config(["model=resnet18", f"paths.cache_dir={tmp_path / 'cache'}"])
    assert run_meta(cfg)["generator"] == "stabilityai/stable-diffusion-xl-base-1.0"
    assert run_meta(cfg)["generator_option"] == "sdxl"
    folder = tmp_path / "my-sdxl"
    folder.mkdir()
    (folder / "model_index.json").write_text("{}")
    with open_dict(cfg):
        cfg.generator.model_id = str(folder)
    first = generator_id(cfg)
    assert first.startswith("my-sdxl@") and len(first) == len("my-sdxl@") + 12
    (folder / "model_index.json").write_text('{"changed": 1}')
    assert generator_id(cfg) != first
    assert run_meta(compose_config([]))["generator"] == "toyworld"


def test_a_cached_hub_id_is_recorded_with_its_snapshot_commit(tmp_path, monkeypatch):
    """A hub id found in the Hugging Face cache is recorded with the commit of the snapshot
    that ``refs/main`` names, so a run says which revision of the weights made its images."""
    import huggingface_hub.constants

    from cosy_bench.bench import standins

    pipeline = tmp_path / "pipe"
    pipeline.mkdir()
    (pipeline / "model_index.json").write_text("{}")
    (tmp_path / "clip.bin").write_bytes(b"x")
    hf_home = standins.hub_cache({"sdxl": pipeline, "clip": tmp_path / "clip.bin"}, tmp_path / "hf")
    hub = hf_home / "hub"
    commit = (hub / f"models--{standins.SDXL_REPO.replace('/', '--')}" / "refs" / "main").read_text()
    assert len(commit) == 40 and commit != "0" * 40
    assert hub_revision(standins.SDXL_REPO, hub) == commit
    assert hub_revision("nobody/nothing", hub) is None
    assert hub_revision("not a repo id", hub) is None
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    cfg = compose_config(["model=resnet18", f"paths.cache_dir={tmp_path / 'cache'}"])
    assert generator_id(cfg) == f"{standins.SDXL_REPO}@{commit[:12]}"
