"""Fault injection: ``kill -9`` a run at random moments, rerun it, and check that the rerun's
results are byte-identical to an undisturbed run and that the cache holds no temporary file,
no claim, no corrupt artefact.

    python -m cosy_bench.bench faults --trials 20 [--seed 0] [--out DIR] [OVERRIDE ...]

Each trial starts the app (default: the toy-world default run) on an empty cache, kills its
process group with SIGKILL after a uniform random time in ``[0.5 s, T]`` (``T``: the
reference run's wall time), reruns it to the end on the same cache and compares
``results.csv`` and ``explanations.csv`` with the reference. It prints one line per trial
(kill time, the last stage logged before the kill, rerun time, verdict) and a summary, and
writes ``faults.json`` in ``--out``. Exit status 1 if any trial failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from cosy_bench.cache.checked import load_tensors_checked, read_text_checked
from cosy_bench.cache.images import KEYWORD

COMPARED = ("results.csv", "explanations.csv")


def _start(cache: Path, out: Path, overrides: Sequence[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "disabled", "COSY_CACHE_DIR": str(cache)}
    with open(log, "w") as f:
        return subprocess.Popen([sys.executable, "-m", "cosy_bench", "logger=none",
                                 f"paths.cache_dir={cache}", f"hydra.run.dir={out}",
                                 *overrides], stdout=f, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


def _run(cache: Path, out: Path, overrides: Sequence[str]) -> float:
    start = time.monotonic()
    proc = _start(cache, out, overrides, out.with_suffix(".log"))
    if proc.wait() != 0:
        raise RuntimeError(f"run failed: see {out.with_suffix('.log')}")
    return time.monotonic() - start


def _last_stage(log: Path) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if "[cosy_bench]" in ln]
    if not lines:
        return "start-up"
    return lines[-1].split(" - ", 1)[-1][:70]


def audit(cache: Path) -> dict[str, int]:
    """Debris and damage in ``cache``: temporary files, claims, files moved aside, artefacts
    that do not verify (safetensors, checked CSVs; PNGs without their checksum chunk)."""
    found = {"temporary": 0, "claims": 0, "moved_aside": 0, "unverified": 0, "artefacts": 0}
    for path in cache.rglob("*"):
        name = path.name
        if not path.is_file() or path.parent.name == "fingerprints":
            continue
        if name.endswith(".tmp"):
            found["temporary"] += 1
        elif name.endswith(".lock") or name.endswith(".break"):
            found["claims"] += 1
        elif ".corrupt-" in name:
            found["moved_aside"] += 1
        else:
            found["artefacts"] += 1
            ok = True
            if name.endswith(".safetensors"):
                ok = load_tensors_checked(path, move=False) is not None
            elif name.endswith(".csv"):
                ok = read_text_checked(path, move=False) is not None
            elif name.endswith(".png"):
                ok = KEYWORD in path.read_bytes()[:200]
            found["unverified"] += not ok
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cosy_bench.bench faults",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temp dir)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the run")
    args = parser.parse_args(argv)
    work = args.out or Path(tempfile.mkdtemp(prefix="cosy-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)

    ref_time = _run(work / "ref-cache", work / "ref", args.overrides)
    reference = {n: (work / "ref" / n).read_bytes() for n in COMPARED}
    print(f"reference run: {ref_time:.1f} s; kill times uniform in [0.5, {ref_time:.1f}] s")
    trials = []
    for i in range(args.trials):
        cache, out = work / f"t{i:02d}-cache", work / f"t{i:02d}"
        at = rng.uniform(0.5, ref_time)
        killed_log = work / f"t{i:02d}-killed.log"
        proc = _start(cache, work / f"t{i:02d}-killed", args.overrides, killed_log)
        try:
            proc.wait(timeout=at)
            finished = True  # ended before the kill
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            finished = False
        debris = audit(cache) if cache.exists() else {}
        rerun = _run(cache, out, args.overrides)
        same = all((out / n).read_bytes() == reference[n] for n in COMPARED)
        after = audit(cache)
        ok = same and not any(after[k] for k in ("temporary", "claims", "moved_aside",
                                                 "unverified"))
        trial = {"trial": i, "kill_at_s": round(at, 2), "finished_before_kill": finished,
                 "stage": _last_stage(killed_log), "left_by_kill": debris,
                 "rerun_s": round(rerun, 1), "identical": same, "after_rerun": after, "ok": ok}
        trials.append(trial)
        left = {k: v for k, v in debris.items() if v and k != "artefacts"}
        print(f"trial {i:2d}: kill at {at:5.1f} s ({trial['stage']}); left {left or 'nothing'}; "
              f"rerun {rerun:5.1f} s, identical={same}, after rerun {after} -> "
              f"{'ok' if ok else 'FAILED'}", flush=True)
    n_ok = sum(t["ok"] for t in trials)
    summary = {"trials": len(trials), "ok": n_ok, "reference_s": round(ref_time, 1),
               "killed_mid_run": sum(not t["finished_before_kill"] for t in trials),
               "left_temporary": sum(t["left_by_kill"].get("temporary", 0) for t in trials),
               "left_claims": sum(t["left_by_kill"].get("claims", 0) for t in trials),
               "overrides": list(args.overrides), "details": trials}
    (work / "faults.json").write_text(json.dumps(summary, indent=2))
    print(f"{n_ok}/{len(trials)} trials ok ({summary['killed_mid_run']} killed mid-run; "
          f"the kills left {summary['left_temporary']} temporary files and "
          f"{summary['left_claims']} claims, all cleared by the reruns); {work / 'faults.json'}")
    return 0 if n_ok == len(trials) else 1
