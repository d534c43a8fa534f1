"""Starting and joining the processes of a DDP run.

:func:`session` starts the processes of a DDP trainer configuration (``trainer=ddp``,
``trainer=ddp_cpu``) and joins them in one ``torch.distributed`` process group *before* the
pipeline starts, so every stage can agree on what to do and every rank runs the same predict
loops in the same order. Every rank runs the whole pipeline; only rank 0 writes results, logs
remotely and prints.

Where the processes come from:

- ``python -m cosy_bench trainer=ddp_cpu`` (and ``-m`` sweeps, and Hydra's submitit
  launchers): the session of the first process starts ``devices - 1`` more processes on this
  machine, each re-running the Hydra app on *this job's* overrides with
  ``hydra.run.dir`` set to this job's folder (so no rank makes a new timestamped folder and
  a ``-m`` sweep is not re-run by every rank), ``hydra.output_subdir=null`` and its own log
  file ``<job>_rank<r>.log``. Lightning's own launcher cannot be used here: it re-runs
  ``sys.argv``, which in a sweep is the whole sweep and under submitit is submitit's command.
- ``torchrun``, ``srun`` (SLURM, also through ``hydra/launcher=slurm``), LSF, MPI: the
  scheduler starts one process per device; the session only joins them (Lightning's
  cluster environments read ranks and addresses from the environment).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cosy_bench.distributed.ranks import barrier, get_rank, get_world_size

log = logging.getLogger("cosy_bench")

# environment variables a local launch sets (and a session restores when it ends)
_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE",
            "OMP_NUM_THREADS")


def require_session(trainer) -> None:
    """Refuse a multi-process trainer whose processes were not started by :func:`session`
    (Lightning would re-run ``sys.argv`` for the other ranks)."""
    n = int(getattr(trainer, "world_size", 1) or 1)
    if n > 1 and get_world_size() != n:
        raise RuntimeError(
            f"the trainer runs {n} processes but no distributed session joins them: run through "
            "`python -m cosy_bench trainer=ddp ...` (or torchrun/srun), or wrap the call in "
            "`with cosy_bench.distributed.session.session(cfg.trainer): ...`")




@dataclass
class Session:
    """The processes of one run: ``rank`` of ``world_size`` (1 of 1 without DDP)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    children: list[subprocess.Popen] = field(default_factory=list)

    @property
    def is_rank_zero(self) -> bool:
        return self.rank == 0


def _cfg_get(cfg, key: str, default=None):
    return cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)


def _multi_process(trainer_cfg) -> bool:
    """Could this trainer configuration run more than one process?"""
    if trainer_cfg is None:
        return False
    devices = _cfg_get(trainer_cfg, "devices", "auto")
    nodes = int(_cfg_get(trainer_cfg, "num_nodes", 1) or 1)
    if nodes > 1:
        return True
    if isinstance(devices, int) or (isinstance(devices, str) and devices.strip().isdigit()):
        return int(devices) > 1
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()]) > 1
    if hasattr(devices, "__len__") and not isinstance(devices, str):
        return len(devices) > 1
    return True  # "auto" / -1: ask Lightning how many devices there are


def _fabric(trainer_cfg):
    from lightning.fabric import Fabric

    strategy = _cfg_get(trainer_cfg, "strategy", "auto")
    if not isinstance(strategy, str):
        raise ValueError("trainer.strategy must be a strategy name (e.g. ddp) for multi-process "
                         f"runs, got {strategy!r}")
    if any(word in strategy for word in ("spawn", "fork", "notebook")):
        raise ValueError(f"trainer.strategy={strategy} starts processes that cannot run the "
                         "pipeline; use trainer=ddp or trainer=ddp_cpu (strategy: ddp)")
    return Fabric(accelerator=_cfg_get(trainer_cfg, "accelerator", "auto"),
                  devices=_cfg_get(trainer_cfg, "devices", "auto"),
                  num_nodes=int(_cfg_get(trainer_cfg, "num_nodes", 1) or 1), strategy=strategy)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _quote(value: str) -> str:
    """A Hydra override value quoted, so paths holding ``=``, ``,`` or spaces stay one value."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# hydra overrides a rank > 0 must not repeat: it runs one job, in the folder it is given
_CHILD_DROPS = ("hydra.mode", "hydra.run.dir", "hydra.job.name", "hydra.output_subdir")


def child_command(hydra_cfg, output_dir: str | os.PathLike, local_rank: int,
                  module: str = "cosy_bench") -> list[str]:
    """The command that starts rank ``local_rank`` of the current Hydra job: the app on this
    job's own overrides (not ``sys.argv``: in a ``-m`` sweep that is the whole sweep, under
    submitit it is submitit's), in this job's folder, with its own log file."""
    cmd = [sys.executable, "-m", module]
    name = hydra_cfg.job.get("config_name")
    if name and name != "config":
        cmd.append(f"--config-name={name}")
    for source in hydra_cfg.runtime.get("config_sources") or []:
        if source.get("provider") == "command-line" and source.get("schema") == "file":
            cmd.append(f"--config-dir={source.path}")
    cmd += list(hydra_cfg.overrides.task)
    cmd += [o for o in hydra_cfg.overrides.hydra
            if o.split("=", 1)[0].lstrip("+~") not in _CHILD_DROPS]
    cmd += [f"hydra.run.dir={_quote(str(Path(output_dir).resolve()))}",
            "hydra.output_subdir=null", f"hydra.job.name={hydra_cfg.job.name}_rank{local_rank}"]
    return cmd


def _start_children(fabric, output_dir) -> tuple[list[subprocess.Popen], dict]:
    """Start local ranks 1..n-1 of this job; set rank 0's DDP environment. Returns the
    processes and the environment to restore when the session ends."""
    from hydra.core.hydra_config import HydraConfig

    if fabric.strategy.num_nodes > 1:
        raise RuntimeError(
            f"trainer.num_nodes={fabric.strategy.num_nodes}: a run over several nodes needs a "
            "launcher that starts one process per device on every node: srun "
            "(launch/slurm_ddp.sbatch, hydra/launcher=slurm) or torchrun (see launch/README.md)")
    if not HydraConfig.initialized():
        raise RuntimeError("a multi-process trainer needs the Hydra app (python -m cosy_bench) "
                           "or an external launcher (torchrun, srun) to start its processes")
    hc = HydraConfig.get()
    n = len(fabric.strategy.parallel_devices)
    saved = {k: os.environ.get(k) for k in _DDP_ENV}
    os.environ.update(MASTER_ADDR=os.environ.get("MASTER_ADDR", "127.0.0.1"),
                      MASTER_PORT=str(free_port()), NODE_RANK="0", LOCAL_RANK="0",
                      WORLD_SIZE=str(n))
    if saved["OMP_NUM_THREADS"] is None:  # as Lightning: share the cores between the ranks
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n))
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    procs = []
    for r in range(1, n):
        cmd = child_command(hc, output_dir, r)
        log.debug("starting rank %d: %s", r, " ".join(cmd))
        procs.append(subprocess.Popen(cmd, env={**os.environ, "LOCAL_RANK": str(r)},
                                      cwd=hc.runtime.cwd))
    return procs, saved


def _watch(procs: list[subprocess.Popen], stop: threading.Event) -> None:
    """If a rank dies, end the others and interrupt rank 0 instead of letting it hang."""
    import _thread

    while not stop.wait(2.0):
        failed = [(i + 1, p.returncode) for i, p in enumerate(procs)
                  if p.poll() is not None and p.returncode != 0]
        if failed:
            log.error("rank %d exited with code %s; stopping the other ranks", *failed[0])
            for p in procs:
                if p.poll() is None:
                    p.kill()
            _thread.interrupt_main()
            if not stop.wait(60):
                os._exit(1)
            return


@contextlib.contextmanager
def session(trainer_cfg, output_dir: str | os.PathLike | None = None) -> Iterator[Session]:
    """Join (and where needed start) the processes of ``trainer_cfg`` for one run.

    A single-process configuration (``trainer=cpu``, ``trainer=gpu``) yields rank 0 of 1 and
    does nothing. A DDP configuration starts the local ranks (see the module docstring) or
    joins the ones a scheduler started, initialises the process group, and on leaving waits
    for the other ranks, destroys the group and restores the environment, so that the next
    job of a ``-m`` sweep starts afresh in the same process.
    """
    if not _multi_process(trainer_cfg) or torch.distributed.is_initialized():
        yield Session(get_rank(), get_world_size())
        return
    fabric = _fabric(trainer_cfg)
    if fabric.world_size <= 1:
        yield Session()
        return
    procs: list[subprocess.Popen] = []
    saved: dict = {}
    threads = torch.get_num_threads()
    stop = threading.Event()
    cosy_log = logging.getLogger("cosy_bench")
    log_level = cosy_log.level
    ok = False
    try:
        if not fabric.strategy.cluster_environment.creates_processes_externally:
            procs, saved = _start_children(fabric, output_dir or ".")
            threading.Thread(target=_watch, args=(procs, stop), daemon=True,
                             name="cosy-ddp-watch").start()
            fabric = _fabric(trainer_cfg)  # now reads LOCAL_RANK etc.: joins, starts nothing
        fabric.launch()  # initialises the process group (and the device of this rank)
        s = Session(fabric.global_rank, fabric.world_size, fabric.local_rank, procs)
        if s.rank:
            cosy_log.setLevel(logging.WARNING)  # rank 0 tells the story
        log.info("distributed: %d processes (%s, %s backend)", s.world_size,
                 type(fabric.strategy.cluster_environment).__name__,
                 torch.distributed.get_backend())
        yield s
        barrier()
        ok = True
    finally:
        stop.set()  # from here on, failures are read from the exit codes
        cosy_log.setLevel(log_level)
        if torch.distributed.is_initialized():
            with contextlib.suppress(Exception):
                torch.distributed.destroy_process_group()
        failed = []
        for i, p in enumerate(procs, start=1):
            try:
                code = p.wait(timeout=300 if ok else 10)
            except subprocess.TimeoutExpired:
                p.kill()
                code = p.wait()
            if code:
                failed.append((i, code))
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        torch.set_num_threads(threads)
        if failed and ok:
            raise RuntimeError(f"rank {failed[0][0]} exited with code {failed[0][1]}; see its "
                               f"log beside run.log")


