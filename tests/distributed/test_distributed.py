"""Scale out: sharding without duplicates or drops, DDP runs equal to single-process runs,
the cache claim between concurrent jobs, Hydra + Lightning process launching, and the
launcher configs.

Multi-process tests run DDP on the CPU (2 processes, gloo) in the toy world with random
weights (``model.weights=null``): small, offline, a few seconds per process. What needs a
GPU machine (NCCL, several GPUs, SLURM) is listed in launch/README.md.
"""

from __future__ import annotations

import csv
import filecmp
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from helpers import run_two_ranks
from omegaconf import OmegaConf

from cosy_bench.cache.claims import claim_is_stale, lock_path, try_claim
from cosy_bench.distributed.ranks import agreed, gather_objects, is_distributed
from cosy_bench.distributed.session import child_command, session
from cosy_bench.distributed.shards import ShardSampler, merge_by_index, shard

REPO = Path(__file__).resolve().parents[2]

# the toy world, small and offline; every run names its own cache and folder
TOY = ["model.weights=null", "logger=none", "n_images=4", "dataset.n=120"]


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE",
                        "RANK", "WANDB_API_KEY", "WANDB_MODE")}
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **extra}


def _app(*args: str, cwd: Path, cache: Path, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "cosy_bench", *args], cwd=cwd,
                          env=_env(COSY_CACHE_DIR=str(cache)), capture_output=True, text=True,
                          timeout=timeout, **kw)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _assert_same_results(a: Path, b: Path, tol: float = 1e-5) -> None:
    ra, rb = _rows(a), _rows(b)
    assert [r["neuron"] for r in ra] == [r["neuron"] for r in rb]
    assert [r["explanation"] for r in ra] == [r["explanation"] for r in rb]
    for x, y in zip(ra, rb, strict=True):
        for col in ("auc", "mad"):
            assert float(x[col]) == pytest.approx(float(y[col]), abs=tol), (x, y)


def _images(cache: Path) -> dict[Path, Path]:
    return {p.relative_to(cache): p for p in sorted((cache / "images").rglob("*.png"))}


# ----------------------------------------------------------------------------- shards


@pytest.mark.parametrize("n,world", [(7, 2), (0, 2), (1, 3), (5, 8), (100, 3), (6, 2)])
def test_shards_cover_every_item_exactly_once(n, world):
    shards = [list(shard(n, r, world)) for r in range(world)]
    flat = sorted(i for s in shards for i in s)
    assert flat == list(range(n))  # no drop, no duplicate, no padding
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    samplers = [ShardSampler(list(range(n)), num_replicas=world, rank=r) for r in range(world)]
    assert [list(s) for s in samplers] == shards
    assert [len(s) for s in samplers] == [len(s) for s in shards]


def test_seven_items_on_two_ranks_split_four_and_three():
    assert list(shard(7, 0, 2)) == [0, 2, 4, 6]
    assert list(shard(7, 1, 2)) == [1, 3, 5]


def test_merge_by_index_restores_input_order_and_drops_repeats():
    a = (torch.tensor([[0.0], [2.0], [4.0], [6.0]]), torch.tensor([0, 2, 4, 6]))
    b = (torch.tensor([[1.0], [3.0], [5.0], [0.0]]), torch.tensor([1, 3, 5, 0]))  # 0 padded
    values, index = merge_by_index([b, None, a])
    assert index.tolist() == list(range(7))
    assert values.flatten().tolist() == [float(i) for i in range(7)]
    assert merge_by_index([None, (torch.empty(0, 3), torch.empty(0, dtype=torch.long))]) is None


def test_a_multi_process_trainer_without_a_session_is_refused():
    import lightning as L

    from cosy_bench.loops.activations import collect_activations

    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)
    with pytest.raises(RuntimeError, match="no distributed session"):
        collect_activations(torch.nn.Identity(), [1, 2, 3], lambda x: x, trainer)


def test_single_process_session_is_a_no_op():
    with session(OmegaConf.create({"accelerator": "cpu", "devices": 1})) as s:
        assert (s.rank, s.world_size, s.is_rank_zero) == (0, 1, True)
        assert not is_distributed()
        assert agreed("x") == "x" and gather_objects(3) == [3]


# ----------------------------------------------------------------------------- two ranks

_WORKER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import lightning as L, torch
    from omegaconf import OmegaConf
    from cosy_bench.cache.claims import compute_once
    from cosy_bench.cache.store import RankAgreedCache, save_tensors_atomic
    from cosy_bench.distributed.session import session
    from cosy_bench.distributed.shards import ShardSampler
    from cosy_bench.generators.base import image_seed
    from cosy_bench.loops.activations import collect_activations
    from cosy_bench.loops.synthesis import WorkItem, synthesize
    from cosy_bench.models.layers import LayerExtractor, LayerSpec
    from cosy_bench.toyworld.data import ToyControlSet
    from cosy_bench.toyworld.generator import ToyWorldGenerator
    from cosy_bench.toyworld.model import load_toy_cnn, preprocess_transform

    out, n = Path(sys.argv[1]), int(sys.argv[2])
    tcfg = dict(accelerator="cpu", devices=2, strategy="ddp", num_nodes=1)
    trainer = lambda: L.Trainer(logger=False, enable_progress_bar=False,
                                enable_model_summary=False, **tcfg)
    with session(OmegaConf.create(tcfg)) as s:
        ext = LayerExtractor(load_toy_cnn(weights=None, seed=0), LayerSpec("conv2", "conv2"))
        data = ToyControlSet(n=n)
        acts, index = collect_activations(ext, data, preprocess_transform(), trainer(),
                                          batch_size=2)
        items = [WorkItem("red", "red", i, image_seed("red", "red", i),
                          str(out / "images" / f"{i:05d}.png")) for i in range(n)]
        made = synthesize(ToyWorldGenerator(), items, trainer(), batch_size=2)
        again = synthesize(ToyWorldGenerator(), items, trainer(), batch_size=2)
        cache = RankAgreedCache(out / "cache")
        target = cache.path("activations", "k", ".safetensors")
        calls = []
        def compute():
            calls.append(1)
            a, _ = collect_activations(ext, data, preprocess_transform(), trainer(), batch_size=3)
            return {"activations": a}
        first = compute_once(target, compute, save_tensors_atomic, cache.load_tensors)
        second = compute_once(target, compute, save_tensors_atomic, cache.load_tensors)
        torch.save({"acts": acts, "index": index, "claimed": first[0]["activations"],
                    "read": second[0]["activations"]}, out / f"rank{s.rank}.pt")
        (out / f"rank{s.rank}.json").write_text(json.dumps(dict(
            rank=s.rank, world=s.world_size, shard=len(ShardSampler(data)), made=made,
            again=again, computed=[first[1], second[1]], calls=len(calls))))
""")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """7 items on 2 ranks (gloo), started as torchrun would: LOCAL_RANK etc. in the env."""
    out = tmp_path_factory.mktemp("two_ranks")
    script = out / "worker.py"
    script.write_text(_WORKER)
    run_two_ranks(script, str(out), "7")
    return out, [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def _single_process_reference(n: int, batch_size: int):
    import lightning as L

    from cosy_bench.loops.activations import collect_activations
    from cosy_bench.models.layers import LayerExtractor, LayerSpec
    from cosy_bench.toyworld.data import ToyControlSet
    from cosy_bench.toyworld.model import load_toy_cnn, preprocess_transform

    ext = LayerExtractor(load_toy_cnn(weights=None, seed=0), LayerSpec("conv2", "conv2"))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    return collect_activations(ext, ToyControlSet(n=n), preprocess_transform(), trainer,
                               batch_size=batch_size)


def test_uneven_shards_on_two_ranks_give_the_single_process_activations(two_ranks):
    out, info = two_ranks
    assert [i["rank"] for i in info] == [0, 1] and {i["world"] for i in info} == {2}
    assert [i["shard"] for i in info] == [4, 3]  # 7 items: 4 + 3, nothing padded
    ref_acts, ref_index = _single_process_reference(7, batch_size=7)
    for r in range(2):
        got = torch.load(out / f"rank{r}.pt")
        assert got["index"].tolist() == list(range(7))  # gathered on every rank, in order
        torch.testing.assert_close(got["acts"], ref_acts, rtol=0, atol=1e-5)
        torch.testing.assert_close(got["claimed"], ref_acts, rtol=0, atol=1e-5)
        assert torch.equal(got["claimed"], got["read"])


def test_uneven_synthesis_on_two_ranks_writes_every_image_once(two_ranks):
    from PIL import Image

    from cosy_bench.generators.base import image_seed
    from cosy_bench.toyworld.generator import ToyWorldGenerator

    out, info = two_ranks
    assert [i["made"] for i in info] == [7, 7]  # the total, on every rank
    assert [i["again"] for i in info] == [0, 0]  # cached items are skipped before sharding
    files = sorted((out / "images").iterdir())
    assert [f.name for f in files] == [f"{i:05d}.png" for i in range(7)]  # no stray temp file
    gen = ToyWorldGenerator()
    for i, f in enumerate(files):  # the image of (prompt, seed), whichever rank made it
        [image] = gen.generate(["red"], [image_seed("red", "red", i)])
        with Image.open(f) as im:
            assert im.tobytes() == image.tobytes()


def test_claimed_computation_under_ddp_runs_once_and_is_read_by_all_ranks(two_ranks):
    _, info = two_ranks
    assert [i["computed"] for i in info] == [[True, False], [True, False]]
    assert [i["calls"] for i in info] == [1, 1]  # one claimed pass, run by both ranks together


# ----------------------------------------------------------------------------- claims


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_claim_is_exclusive_until_released(tmp_path):
    target = tmp_path / "a.safetensors"
    first = try_claim(target)
    assert first is not None
    info = json.loads(lock_path(target).read_text())
    assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
    assert info["time"] == pytest.approx(time.time(), abs=60)
    assert try_claim(target) is None
    first.release()
    assert not lock_path(target).exists()
    again = try_claim(target)
    assert again is not None
    again.release()


def test_a_claim_of_a_dead_process_is_taken_over(tmp_path):
    target = tmp_path / "a.safetensors"
    lock_path(target).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(),
                                             "time": time.time(), "token": "dead"}))
    assert claim_is_stale(lock_path(target), stale_after=3600)
    claim = try_claim(target, stale_after=3600)
    assert claim is not None
    assert json.loads(lock_path(target).read_text())["pid"] == os.getpid()
    claim.release()


def test_a_claim_of_a_zombie_process_is_taken_over(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.05)  # exited, not reaped: kill(pid, 0) still succeeds
    lock = lock_path(tmp_path / "a.safetensors")
    lock.write_text(json.dumps({"pid": proc.pid, "host": socket.gethostname(), "time": 0}))
    try:
        assert claim_is_stale(lock, stale_after=3600)
    finally:
        proc.wait()


def test_a_claim_from_another_host_is_taken_over_only_after_the_timeout(tmp_path):
    target = tmp_path / "a.safetensors"
    lock = lock_path(target)
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "time": time.time(),
                                "token": "remote"}))
    assert try_claim(target, stale_after=60) is None  # alive as far as we can tell
    old = time.time() - 120
    os.utime(lock, (old, old))  # no heartbeat for two minutes
    claim = try_claim(target, stale_after=60)
    assert claim is not None
    claim.release()


def test_the_holder_s_heartbeat_keeps_a_long_claim_fresh(tmp_path):
    target = tmp_path / "a.safetensors"
    claim = try_claim(target, stale_after=1.0)  # heartbeat every 0.5 s
    time.sleep(2.0)
    assert not claim_is_stale(lock_path(target), stale_after=1.0)
    assert try_claim(target, stale_after=1.0) is None
    claim.release()


_CLAIMER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from cosy_bench.cache.claims import compute_once
    target, counter = Path(sys.argv[1]), Path(sys.argv[2])
    go = Path(sys.argv[3])
    Path(str(go) + "." + sys.argv[4]).touch()  # ready
    while not go.exists():  # all processes ask at the same moment
        time.sleep(0.01)
    def compute():
        with open(counter, "a") as f:
            f.write("computed\\n")
        time.sleep(1.0)
        return {"value": 42}
    def save(path, value):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(value))
        tmp.replace(path)
    value, computed = compute_once(target, compute, save,
                                   lambda p: json.loads(p.read_text()), poll=0.1)
    print(json.dumps({"value": value, "computed": computed}))
""")


def test_concurrent_processes_compute_a_claimed_artefact_once(tmp_path):
    script = tmp_path / "claimer.py"
    script.write_text(_CLAIMER)
    target, counter = tmp_path / "artefact.json", tmp_path / "counter.txt"
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, str(script), str(target), str(counter), str(go),
                               str(i)], env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(3)]
    deadline = time.monotonic() + 90
    while len(list(tmp_path.glob("go.*"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    results = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
    assert counter.read_text().splitlines() == ["computed"]
    assert [r["value"] for r in results] == [{"value": 42}] * 3
    assert sorted(r["computed"] for r in results) == [False, False, True]
    assert not lock_path(target).exists()


# ----------------------------------------------------------------------------- Hydra


def _hydra_cfg(**over):
    base = {"job": {"name": "run", "config_name": "config"},
            "runtime": {"cwd": "/somewhere", "config_sources": [
                {"path": "/repo/conf", "schema": "file", "provider": "main"}]},
            "overrides": {"task": ["explainer=ground_truth", "trainer=ddp_cpu",
                                   "prompt.template=a photo of {}"],
                          "hydra": ["hydra.mode=MULTIRUN", "hydra/launcher=submitit_local",
                                    "hydra.job.chdir=false"]}}
    return OmegaConf.merge(OmegaConf.create(base), OmegaConf.create(over))


def test_child_ranks_run_this_job_in_its_folder_not_the_sweep():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    folder = "/runs/multirun/0_explainer=ground_truth,layer=output/it's here"
    cmd = child_command(_hydra_cfg(), folder, 1)
    assert cmd[:3] == [sys.executable, "-m", "cosy_bench"]
    assert "-m" not in cmd[3:] and "--multirun" not in cmd
    assert "hydra.mode=MULTIRUN" not in cmd  # one job, not the sweep again
    assert cmd[3:6] == ["explainer=ground_truth", "trainer=ddp_cpu",
                        "prompt.template=a photo of {}"]
    assert "hydra/launcher=submitit_local" in cmd and "hydra.job.chdir=false" in cmd
    assert "hydra.output_subdir=null" in cmd and "hydra.job.name=run_rank1" in cmd
    parsed = OverridesParser.create().parse_overrides([c for c in cmd[3:] if "run.dir" in c])
    assert parsed[0].key_or_group == "hydra.run.dir"
    assert parsed[0].value() == folder  # one value, commas, '=' and quote included
    named = child_command(_hydra_cfg(job={"config_name": "other"}, runtime={"config_sources": [
        {"path": "/my/conf", "schema": "file", "provider": "command-line"}]}), folder, 2)
    assert "--config-name=other" in named and "--config-dir=/my/conf" in named


GPUS = torch.cuda.device_count()


@pytest.mark.slow
@pytest.mark.parametrize("single_trainer,ddp_trainer", [
    pytest.param(["trainer=cpu"], ["trainer=ddp_cpu"], id="cpu"),
    pytest.param(["trainer=gpu"], ["trainer=ddp", "trainer.devices=2"], id="gpu",
                 marks=pytest.mark.skipif(GPUS < 2, reason="needs 2 GPUs (NCCL)")),
])
def test_ddp_run_equals_the_single_process_run(tmp_path, single_trainer, ddp_trainer):
    """`python -m cosy_bench trainer=ddp_cpu` (and, on a machine with 2 GPUs, `trainer=ddp`):
    same results (1e-5), byte-identical images, one run folder (the other rank does not make
    its own), rank 0 alone writes and prints."""
    single_cache, ddp_cache = tmp_path / "cache1", tmp_path / "cache2"
    single = subprocess.Popen(  # side by side with the DDP run
        [sys.executable, "-m", "cosy_bench", *TOY, "explainer=ground_truth", *single_trainer,
         f"hydra.run.dir={tmp_path / 'single'}"],
        cwd=tmp_path, env=_env(COSY_CACHE_DIR=str(single_cache)), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    work = tmp_path / "work"
    work.mkdir()
    try:
        ddp = _app(*TOY, "explainer=ground_truth", *ddp_trainer, cwd=work, cache=ddp_cache)
        single_out = single.communicate(timeout=300)[0]
    finally:
        if single.poll() is None:
            single.kill()
    assert single.returncode == 0, single_out[-3000:]

    runs = [p.parent for p in (work / "outputs").rglob("results.csv")]
    assert len(runs) == 1 and len(list((work / "outputs").glob("*/*"))) == 1
    run = runs[0]
    assert (run / "run_rank1.log").exists() and (run / "summary.json").exists()
    assert ddp.stdout.count("CoSy results:") == 1
    _assert_same_results(tmp_path / "single" / "results.csv", run / "results.csv")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["run"]["images_generated"] == 25 * 4
    assert summary["run"]["n_control"] == 120

    a, b = _images(single_cache), _images(ddp_cache)
    assert list(a) == list(b) and len(a) == 100
    assert all(filecmp.cmp(a[k], b[k], shallow=False) for k in a)
    assert not list(ddp_cache.rglob("*.tmp")) and not list(ddp_cache.rglob("*.lock"))
    assert single_out.count("CoSy results:") == 1


@pytest.mark.slow
def test_ddp_milan_gives_the_single_process_explanations(tmp_path):
    """explainer=milan under trainer=ddp_cpu: the exemplar pass runs sharded, the units are
    described across the ranks and gathered; the explanations equal one process's."""
    milan = ["explainer=milan", "layer=concepts", "probe.n=300", "neurons.ids=[0,8,14,18,22]"]
    single = _app(*TOY, *milan, f"hydra.run.dir={tmp_path / 'single'}", cwd=tmp_path,
                  cache=tmp_path / "cache1")
    work = tmp_path / "work"
    work.mkdir()
    ddp = _app(*TOY, *milan, "trainer=ddp_cpu", cwd=work, cache=tmp_path / "cache2")
    assert "describing 5 units" in single.stderr + single.stdout
    assert ddp.stdout.count("CoSy results:") == 1
    run = next(p.parent for p in (work / "outputs").rglob("results.csv"))
    _assert_same_results(tmp_path / "single" / "results.csv", run / "results.csv")
    a, b = _rows(tmp_path / "single" / "results.csv"), _rows(run / "results.csv")
    assert [r["milan_score"] for r in a] == [r["milan_score"] for r in b]


def _control_key_path(compose, cache: Path, *overrides: str) -> Path:
    """Where a run with ``overrides`` caches its control activations."""
    from hydra.utils import instantiate

    from cosy_bench.cache.store import Cache
    from cosy_bench.context import RunContext
    from cosy_bench.models import create_model

    cfg = compose([*overrides, f"paths.cache_dir={cache}"])
    model = create_model(cfg.model, seed=cfg.seed)
    ctx = RunContext(cfg, Cache(cache), model, model.layer(cfg.layer.name), None, 0)
    return ctx.activations_path(instantiate(cfg.dataset))


# ----------------------------------------------------------------------------- launchers


def _compose_with_hydra(overrides: list[str]):
    import warnings

    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"), \
            warnings.catch_warnings():  # submitit_local.yaml restates the plugin's schema
        warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/submitit_local'")
        return compose("config", overrides=overrides, return_hydra_config=True)


def test_trainer_configs_for_one_and_several_devices_compose():
    import lightning as L
    from hydra.utils import instantiate

    ddp_cpu = _compose_with_hydra(["trainer=ddp_cpu"]).trainer
    assert (ddp_cpu.accelerator, ddp_cpu.strategy, ddp_cpu.devices, ddp_cpu.num_nodes) == (
        "cpu", "ddp", 2, 1)
    trainer = instantiate(ddp_cpu)  # builds; processes start only in a session
    assert isinstance(trainer, L.Trainer) and trainer.world_size == 2
    ddp = _compose_with_hydra(["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"]).trainer
    assert (ddp.accelerator, ddp.strategy, ddp.devices, ddp.num_nodes) == ("gpu", "ddp", 4, 2)
    assert _compose_with_hydra(["trainer=ddp"]).trainer.devices == -1  # every visible GPU
    gpu = _compose_with_hydra(["trainer=gpu"]).trainer
    assert (gpu.accelerator, gpu.devices) == ("gpu", 1)


def test_slurm_launcher_config_submits_one_ddp_job_per_sweep_job(tmp_path, monkeypatch):
    """hydra/launcher=slurm through the plugin's own code up to the sbatch file (a fake
    `srun` on PATH; nothing is submitted)."""
    import submitit
    from hydra.utils import instantiate

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    cfg = _compose_with_hydra([
        "hydra/launcher=slurm", "trainer=ddp", "trainer.num_nodes=2",
        "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=8",
        "hydra.launcher.setup=[module load cuda]", f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    scripts = []

    class Recorder(submitit.AutoExecutor):
        def map_array(self, fn, *args):
            scripts.append(self._executor._make_submission_file_text("python -m cosy_bench", "x"))
            return []

    monkeypatch.setattr(submitit, "AutoExecutor", Recorder)
    launcher.launch([["explainer=random"], ["explainer=ground_truth"]], initial_job_idx=0)
    [script] = scripts
    for line in ("--nodes=2", "--ntasks-per-node=8", "--gpus-per-node=8", "--partition=gpu",
                 "--time=240", "--mem=64GB", "--cpus-per-task=8"):
        assert f"#SBATCH {line}\n" in script, script
    assert "module load cuda" in script and "srun" in script
    assert str(tmp_path / "sweep" / ".submitit") in script


def test_submitit_local_launcher_config_composes():
    from hydra.utils import instantiate

    cfg = _compose_with_hydra(["hydra/launcher=submitit_local", "hydra.sweep.dir=/s"])
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "LocalLauncher"
    assert launcher.params["tasks_per_node"] == 1  # DDP ranks are started by the session
    assert launcher.params["submitit_folder"] == "/s/.submitit/%j"


@pytest.mark.slow
def test_submitit_local_sweep_jobs_started_together_compute_control_activations_once(
        compose, tmp_path):
    """`python -m cosy_bench -m hydra/launcher=submitit_local explainer=ground_truth,random
    layer=output` (small) leaves two run folders. Its two jobs start together on the same
    model, layer and control set, and find the control activations claimed by a holder that
    then crashes: one job takes over and computes them, the other waits and reads its file;
    neither reads a half-written one."""
    cache, sweep = tmp_path / "cache", tmp_path / "sweep"
    target = _control_key_path(compose, cache, *TOY, "layer=output")
    lock_path(target).parent.mkdir(parents=True)
    # a live holder beats (touches its claim) until it crashes
    holder = subprocess.Popen([sys.executable, "-c", "import os, sys, time\n"
                               "while True:\n    os.utime(sys.argv[1]) if os.path.exists("
                               "sys.argv[1]) else None\n    time.sleep(1)",
                               str(lock_path(target))])
    lock_path(target).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                             "time": time.time(), "token": "holder"}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "cosy_bench", "-m", "hydra/launcher=submitit_local",
         "explainer=ground_truth,random", "layer=output", *TOY, f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, env=_env(COSY_CACHE_DIR=str(cache)), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 150
        while True:  # until both jobs wait on the claim
            logs = [p.read_text() for p in sweep.glob("*/run.log")]
            if len(logs) == 2 and all("control activations: another process is computing it"
                                      in t for t in logs):
                break
            assert proc.poll() is None, "the sweep ended early"
            assert time.monotonic() < deadline, "the jobs never waited on the claim"
            time.sleep(0.2)
        holder.kill()  # the holder crashes without writing anything
        holder.wait()
        out, err = proc.communicate(timeout=200)
    finally:
        for p in (holder, proc):
            if p.poll() is None:
                p.kill()
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    assert "validated against ConfigStore schema" not in err

    runs = sorted(p.parent for p in sweep.glob("*/results.csv"))
    assert len(runs) == 2
    assert runs[0].name.startswith("0_") and "explainer=ground_truth" in runs[0].name
    assert runs[1].name.startswith("1_") and "explainer=random" in runs[1].name
    summaries = [json.loads((run / "summary.json").read_text()) for run in runs]
    assert [s["auc"]["n"] for s in summaries] == [48, 48]  # every class of the toy CNN
    computed = [s["run"]["control_activations_computed"] for s in summaries]
    assert sorted(computed) == [False, True], computed
    logs = [(run / "run.log").read_text() for run in runs]
    assert sum("control activations: computing on" in t for t in logs) == 1
    waiter = logs[computed.index(False)]
    assert "control activations: made by another process, read after" in waiter
    assert target.exists()
    assert not list(cache.rglob("*.lock")) and not list(cache.rglob("*.tmp"))
