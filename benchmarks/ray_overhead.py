"""The demo pipeline on the local executor vs on a local Ray cluster with the same resources.

    .venv/bin/python benchmarks/ray_overhead.py [--config pipelines/demo.yaml] [--cpus 2] [--repeats 1]

Each repeat builds the same config twice into fresh run directories, each build a fresh
`prefsynth build` process as a user runs it: once with the local executor, once with
`--executor ray` on a local Ray cluster this script starts with `ray start --head --num-cpus CPUS`
(the cores the local build uses) and stops at the end.
Per stage it reports wall time, engine start-up (`startup_s` in the stage state: worker process or
actor, imports, model load) and the rest, plus the time the build spends outside stages (loading
prompts, the card, reports; connecting to the cluster). Target: Ray's wall time after engine
start-up <= 1.15x the local executor's. Starting the cluster is reported apart: a user's cluster
is running before the build starts. The two builds' tables are compared too: the ratio is only
meaningful if they did the same work.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def stage_times(run_dir: Path, stages: list[str]) -> dict[str, dict[str, float]]:
    import pyarrow.parquet as pq

    times = {}
    for name in stages:
        state = json.loads((run_dir / name / "_stage.json").read_text())
        shards = sorted((run_dir / name).glob("shard-*.parquet"))
        process = sum(float(pq.read_schema(p).metadata.get(b"wall_s", b"0")) for p in shards)
        times[name] = {"wall": state["wall_s"], "startup": state.get("startup_s") or 0.0, "process": process}
    return times


def same_tables(a: Path, b: Path, stages: list[str]) -> bool:
    import pyarrow.parquet as pq

    for name in stages:
        for path in sorted((a / name).glob("shard-*.parquet")):
            if not pq.read_table(path).replace_schema_metadata(None).equals(
                    pq.read_table(b / name / path.name).replace_schema_metadata(None)):
                return False
    return True


def build(config: Path, run_dir: Path, executor: str) -> float:
    command = [sys.executable, "-m", "prefsynth.cli", "build", str(config), "--run-dir", str(run_dir), "--quiet",
               "--executor", executor] + (["--ray-address", "auto"] if executor == "ray" else [])
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{executor} build failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, default=REPO / "pipelines" / "demo.yaml")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    ray_cli = str(Path(sys.executable).with_name("ray"))
    t0 = time.perf_counter()
    subprocess.run([ray_cli, "start", "--head", "--num-cpus", str(args.cpus), "--num-gpus", "0",
                    "--include-dashboard", "false", "--disable-usage-stats"], check=True, capture_output=True)
    ray_start = time.perf_counter() - t0
    rows = []
    try:
        run_all(args, rows)
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True)
    print(f"\nmachine: {platform.machine()}, {args.cpus} CPUs for both; `ray start` took {ray_start:.1f} s (not counted)")
    for index, (runs, identical) in enumerate(rows):
        local, on_ray = runs["local"], runs["ray"]
        print(f"repeat {index}: total local {local['wall']:.1f} s, ray {on_ray['wall']:.1f} s "
              f"(ratio {on_ray['wall'] / local['wall']:.3f}); engine start-up local {local['startup']:.1f} s, "
              f"ray {on_ray['startup']:.1f} s; after start-up local {local['after']:.2f} s, ray {on_ray['after']:.2f} s: "
              f"ratio {on_ray['after'] / local['after']:.3f} (target <= 1.15), identical tables {identical}")


def run_all(args, rows: list) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            runs = {}
            for label in ("local", "ray"):  # local first: its fixture models are built before Ray's actors need them
                run_dir = Path(tmp) / f"{label}-{repeat}"
                wall = build(args.config, run_dir, label)
                summary = json.loads((run_dir / "manifest.json").read_text())["summary"]
                stages = [s["name"] for s in summary if s["name"] != "prompts"]
                times = stage_times(run_dir, stages)
                startup = sum(t["startup"] for t in times.values())
                runs[label] = {"wall": wall, "startup": startup, "after": wall - startup, "stages": times,
                               "outside": wall - sum(t["wall"] for t in times.values()), "run_dir": run_dir}
            identical = same_tables(runs["local"]["run_dir"], runs["ray"]["run_dir"], ["prompts"] + stages)
            rows.append((runs, identical))
            local, on_ray = runs["local"], runs["ray"]
            print(f"\nrepeat {repeat}: {args.config.name}, identical tables: {identical}")
            print(f"{'stage':<22}{'local wall':>11}{'start-up':>10}{'process':>9}{'rest':>7}"
                  f"{'ray wall':>11}{'start-up':>10}{'process':>9}{'rest':>7}")
            for name in stages:
                a, b = local["stages"][name], on_ray["stages"][name]
                print(f"{name:<22}{a['wall']:>11.2f}{a['startup']:>10.2f}{a['process']:>9.2f}"
                      f"{a['wall'] - a['startup'] - a['process']:>7.2f}{b['wall']:>11.2f}{b['startup']:>10.2f}"
                      f"{b['process']:>9.2f}{b['wall'] - b['startup'] - b['process']:>7.2f}")
            print(f"{'outside stages':<22}{local['outside']:>11.2f}{'':>26}{on_ray['outside']:>11.2f}")


if __name__ == "__main__":
    main()
