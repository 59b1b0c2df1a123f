"""Nightly-job soak: the demo pipeline run again and again into one run directory while things go wrong.

    python benchmarks/soak.py --runs 200 --minutes 20 --out benchmarks/results/

Each *episode* is a fresh run directory on a small tmpfs the script mounts (root only; elsewhere the disk-full
events are left out and the report says so). `eztag run pipelines/demo.toml` is started over and over until one
run ends cleanly; each start counts as a run and gets one random disturbance:
- a kill at a random moment: SIGKILL, SIGTERM or SIGINT;
- an overlapping second run on the same directory, plain (it must fail at once with the lock error) or with
  `--wait` (it must wait and then finish or resume the work);
- a disk that fills at a random point: a ballast file leaves a random amount of free space, removed after the run;
- nothing.
After each graceful end (exit 0, 2, 130, 143) the run directory must hold no temporary files; after each episode
every output file must be byte-equal to an undisturbed reference run (`corrupt` counts files that differ; a JSON
report that differs only in a wall-clock time, a key ending in "seconds", counts as equal),
no document may lack its tags (`lost`) and no (document, rank) may appear twice (`duplicated`).
Anything else — a traceback, a Bus error, an unexpected exit status or message — is counted as `broke` and logged.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import polars as pl

from eztag.artifacts import differing_outputs

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "pipelines" / "demo.toml"
KILLS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)
GRACEFUL = {0, 2, 130, 143}


def start(run_dir: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "eztag.cli", "run", str(PIPELINE), "--run-dir", str(run_dir), *extra]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def leftovers(run_dir: Path) -> list[str]:
    """Temporary files and partial folders a graceful end must not leave."""
    return [str(path) for path in run_dir.rglob("*") if path.name.endswith((".tmp", ".partial"))]


def mount_tmpfs(folder: Path, size_mb: int) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(folder)], check=False)
    return result.returncode == 0


def fill(ballast: Path, leave: int) -> int:
    """Make a ballast file that leaves about `leave` bytes free; its size."""
    size = max(0, shutil.disk_usage(ballast.parent).free - leave)
    with open(ballast, "wb") as handle:
        if size:
            os.posix_fallocate(handle.fileno(), 0, size)
    return size


class Soak:
    def __init__(self, work: Path, rng: random.Random, disk_full: bool, log) -> None:
        self.work, self.rng, self.disk_full, self.log = work, rng, disk_full, log
        self.counts: Counter[str] = Counter()
        self.broke: list[str] = []
        self.reference = work / "reference" / "run"
        self.seconds = 0.0

    def note(self, text: str) -> None:
        self.log.write(text + "\n")
        self.log.flush()

    def check_end(self, name: str, process: subprocess.Popen[str], run_dir: Path) -> str:
        """Classify how a run ended ('ok', 'killed', 'interrupted', 'disk_full', 'locked'); log what broke."""
        _, err = process.communicate()
        status = process.returncode
        lines = err.strip().splitlines()
        last = lines[-1] if lines else ""
        self.note(f"  {name}: exit {status}: {last}")
        outcome = {
            0: "ok",
            -9: "killed",
            130: "interrupted",
            143: "interrupted",
        }.get(status)
        if status == 2 and "No space left on device" in last:
            outcome = "disk_full"
        elif status == 2 and "is in use by another eztag run" in last:
            outcome = "locked"
        if "Traceback" in err or outcome is None or (outcome == "interrupted" and "rerun the same command" not in last):
            self.broke.append(f"{name}: exit {status}: {err.strip()[-2000:]}")
            outcome = "broke"
        if outcome == "disk_full" and "stage '" not in last:
            self.broke.append(f"{name}: disk-full line without a stage: {last}")
        if outcome in ("disk_full", "locked") and sum(line.startswith("eztag:") for line in lines) != 1:
            self.broke.append(f"{name}: {outcome} error is not one line: {err.strip()}")
        if status in GRACEFUL and leftovers(run_dir):
            self.broke.append(f"{name}: temporary files left: {leftovers(run_dir)}")
        return outcome

    def reference_run(self) -> None:
        run_dir = self.reference
        started = time.perf_counter()
        process = start(run_dir)
        if self.check_end("reference", process, run_dir) != "ok":
            raise SystemExit(f"the reference run failed: {self.broke}")
        self.seconds = time.perf_counter() - started
        self.note(f"reference run: {self.seconds:.1f} s")

    def one_run(self, name: str, run_dir: Path) -> bool:
        """One started run with one disturbance; True when it ended cleanly with nothing disturbing it."""
        choices = ["kill", "kill", "overlap", "none"] + (["disk_full", "disk_full"] if self.disk_full else [])
        kind = self.rng.choice(choices)
        delay = self.rng.uniform(0.5, self.seconds)
        ballast = run_dir.parents[1] / "ballast"
        if kind == "disk_full":
            leave = self.rng.randint(0, 3 * 2**20)
            fill(ballast, leave)
            self.note(f"{name}: disk full, {leave} bytes left free")
        process = start(run_dir)
        self.counts["runs"] += 1
        second = None
        if kind == "kill":
            number = self.rng.choice(KILLS)
            self.note(f"{name}: {number.name} after {delay:.1f} s")
            try:
                process.wait(delay)
            except subprocess.TimeoutExpired:
                process.send_signal(number)
                self.counts[f"kills_{number.name}"] += 1
        elif kind == "overlap":
            wait = self.rng.random() < 0.5
            delay /= 3  # a resumed run is short: overlap it early
            self.note(f"{name}: second run{' --wait' if wait else ''} after {delay:.1f} s")
            try:
                process.wait(delay)
            except subprocess.TimeoutExpired:
                second = start(run_dir, *(["--wait", "600"] if wait else []))
                self.counts["runs"] += 1
                self.counts["overlaps"] += 1
                if not wait:
                    outcome = self.check_end(f"{name} (second)", second, run_dir)
                    self.counts["overlaps_refused" if outcome == "locked" else f"overlaps_{outcome}"] += 1
                    second = None
        elif kind == "none":
            self.note(f"{name}: undisturbed")
        outcome = self.check_end(name, process, run_dir)
        self.counts[f"ended_{outcome}"] += 1
        if second is not None:
            waited = self.check_end(f"{name} (waiting second)", second, run_dir)
            self.counts[f"overlaps_waited_{waited}"] += 1
            outcome = "ok" if outcome == waited == "ok" else "disturbed"
        if kind == "disk_full":
            ballast.unlink()
            self.counts["disk_full_events" if outcome == "disk_full" else "disk_full_not_hit"] += 1
        return outcome == "ok"

    def episode(self, number: int, fs: Path) -> None:
        run_dir = fs / f"episode-{number:03d}" / "run"  # the same name as the reference: it is in metrics.md
        attempt = 0
        while True:
            attempt += 1
            if self.one_run(f"episode {number} run {attempt}", run_dir):
                break
            if attempt > 40:
                self.broke.append(f"episode {number}: no clean end in 40 runs")
                break
        self.check_outputs(number, run_dir)
        shutil.rmtree(run_dir.parent)
        self.counts["episodes"] += 1

    def check_outputs(self, number: int, run_dir: Path) -> None:
        differ = differing_outputs(run_dir, self.reference)
        self.counts["corrupt"] += len(differ)
        tags = pl.read_parquet(run_dir / "tag" / "tags.parquet")
        documents = pl.read_parquet(run_dir / "ingest" / "documents.parquet").height
        self.counts["lost"] += documents - tags["doc_id"].n_unique()
        self.counts["duplicated"] += int(tags.select("doc_id", "rank").is_duplicated().sum())
        self.note(f"episode {number}: outputs checked, {len(differ)} differ {differ}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="stop starting episodes after this many runs")
    parser.add_argument("--minutes", type=float, default=20.0, help="stop starting episodes after this long")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/eztag-soak"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    args.out.mkdir(parents=True, exist_ok=True)
    fs = args.work / "fs"
    disk_full = mount_tmpfs(fs, 16)
    started = time.monotonic()
    with open(args.out / "soak.log", "w", encoding="utf-8") as log:
        log.write(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}\n")
        soak = Soak(args.work, random.Random(args.seed), disk_full, log)
        soak.note(f"tmpfs for disk-full events: {'mounted (16 MB)' if disk_full else 'not available, none injected'}")
        try:
            soak.reference_run()
            number = 0
            while soak.counts["runs"] < args.runs and time.monotonic() - started < args.minutes * 60:
                number += 1
                soak.episode(number, fs)
        finally:
            if disk_full:
                subprocess.run(["umount", str(fs)], check=False)
    counts = soak.counts
    kills = sum(count for key, count in counts.items() if key.startswith("kills_"))
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "minutes": round((time.monotonic() - started) / 60, 1),
        "reference_run_seconds": round(soak.seconds, 1),
        "disk_full_injected": disk_full,
        "runs": counts["runs"],
        "episodes": counts["episodes"],
        "kills": kills,
        "overlaps": counts["overlaps"],
        "disk_full_events_survived": counts["disk_full_events"],
        "lost": counts["lost"],
        "duplicated": counts["duplicated"],
        "corrupt": counts["corrupt"],
        "broke": soak.broke,
        "counts": dict(sorted(counts.items())),
    }
    (args.out / "soak.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        f"soak: runs {result['runs']} in {result['episodes']} episodes, kills {kills} "
        f"({', '.join(f'{k[6:]} {v}' for k, v in sorted(counts.items()) if k.startswith('kills_'))}), "
        f"overlaps {result['overlaps']}, disk-full events survived {result['disk_full_events_survived']}, "
        f"lost {result['lost']}, duplicated {result['duplicated']}, corrupt {result['corrupt']}, "
        f"broke {len(soak.broke)}"
    )


if __name__ == "__main__":
    main()
