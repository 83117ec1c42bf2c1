"""The build report's wall time and peak memory on a synthetic run of a million candidates in 101
languages, against reading the run's candidates into pandas (what the report did before it read
column by column), each in a fresh process.

    .venv/bin/python benchmarks/report_scale.py [--candidates 1000000] [--languages 101] [--dir DIR]

The run directory (no models: manifest.json, filter/shard-*.parquet with answer texts, the exported
pairs) is built once under DIR and reused. Rows printed, each from its own child process:
- import floor: the report's imports, nothing read;
- report at a tenth of the candidates, and at all of them: `write_report` (bounded memory means
  the two peaks are close);
- peer: `pd.read_parquet(RUN/"filter")`, the candidates table in pandas.
The ratio line is report / peer peak RSS, above the import floor and whole.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
CANDIDATES_PER_PROMPT = 8
STRAY_LABELS = 150  # labels a language-ID backend returns besides the prompt languages


def _texts(rng: np.random.Generator, count: int, mean_chars: int) -> pa.Array:
    """`count` strings of random lowercase words, built as one buffer (no per-row Python)."""
    lengths = rng.integers(mean_chars // 3, mean_chars * 5 // 3, count)
    offsets = np.zeros(count + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    letters = rng.integers(ord("a"), ord("z") + 1, int(offsets[-1]), dtype=np.uint8)
    letters[rng.random(len(letters)) < 0.17] = ord(" ")
    return pa.StringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(letters))


def synthetic_run(path: Path, candidates: int = 1_000_000, languages: int = 101, *, shard_rows: int = 10_000,
                  mean_chars: int = 240, seed: int = 0) -> Path:
    """A finished run's artefacts as the report reads them: every column the filter stage writes
    that the report does not need is there too (the texts above all), so reading too much shows."""
    from prefsynth import langs

    rng = np.random.default_rng(seed)
    codes = np.array(sorted(langs.codes())[:languages])
    strays = np.array([f"x{i:03d}" for i in range(STRAY_LABELS)])
    (path / "filter").mkdir(parents=True, exist_ok=True)
    pairs_dir = path / "dataset" / "data" / "pairs"
    pairs_dir.mkdir(parents=True, exist_ok=True)
    counts = {code: {"prompts_in": 0, "candidates": 0, "lid_rejected": 0, "pairs": 0} for code in codes}
    for shard, start in enumerate(range(0, candidates, shard_rows)):
        rows = min(shard_rows, candidates - start)
        prompts = -(-rows // CANDIDATES_PER_PROMPT)
        prompt_language = codes[rng.integers(0, len(codes), prompts)]
        prompt_index = np.repeat(np.arange(prompts), CANDIDATES_PER_PROMPT)[:rows]
        language = prompt_language[prompt_index]
        lid = np.where(rng.random(rows) < 0.9, language, strays[rng.integers(0, len(strays), rows)])
        keep = lid == language
        score = rng.normal(0, 1, rows) + (rng.random(prompts) * 2)[prompt_index]
        tokens = rng.integers(20, 400, rows).astype(np.int32)
        prompt_id = np.char.add(f"p{shard:05d}-", np.arange(prompts).astype(str))[prompt_index]
        sample_index = (np.arange(rows) % CANDIDATES_PER_PROMPT).astype(np.int32)
        pq.write_table(pa.table({
            "candidate_id": np.char.add(np.char.add(prompt_id, "/g/"), sample_index.astype(str)),
            "prompt_id": prompt_id, "language": language, "generator": np.full(rows, "g"),
            "strategy": np.full(rows, "in_language"), "sample_index": sample_index,
            "text": _texts(rng, rows, mean_chars), "finish_reason": np.full(rows, "stop"),
            "completion_tokens": tokens, "rm_score_raw": score, "lid_lang": lid,
            "lid_prob": rng.random(rows), "keep": keep, "reason": np.where(keep, None, "wrong_language"),
        }), path / "filter" / f"shard-{shard:05d}.parquet")
        # best vs worst kept candidate of each prompt with two or more
        order = np.lexsort((score, prompt_index))
        kept_order = order[keep[order]]
        first = np.r_[True, prompt_index[kept_order][1:] != prompt_index[kept_order][:-1]]
        last = np.r_[first[1:], True]
        worst, best = kept_order[first], kept_order[last]
        usable = best != worst
        worst, best = worst[usable], best[usable]
        pq.write_table(pa.table({
            "prompt_id": prompt_id[best], "language": language[best],
            "chosen": _texts(rng, len(best), mean_chars), "rejected": _texts(rng, len(best), mean_chars),
            "chosen_score": score[best], "rejected_score": score[worst], "margin": score[best] - score[worst],
            "chosen_tokens": tokens[best], "rejected_tokens": tokens[worst],
        }), pairs_dir / f"train-{shard:05d}.parquet")
        for code, n in zip(*np.unique(prompt_language, return_counts=True)):
            counts[code]["prompts_in"] += int(n)
        for field, values in (("candidates", language), ("lid_rejected", language[~keep]), ("pairs", language[best])):
            for code, n in zip(*np.unique(values, return_counts=True)):
                counts[code][field] += int(n)
    coverage = [{"language": str(code), "prompts_in": c["prompts_in"], "translated": 0, "candidates": c["candidates"],
                 "lid_rejected": c["lid_rejected"], "kept": c["candidates"] - c["lid_rejected"], "pairs": c["pairs"]}
                for code, c in counts.items()]
    (path / "manifest.json").write_text(json.dumps({
        "pipeline": f"synthetic-{candidates}x{languages}",
        "config": {"selector": {"method": "best_vs_worst", "score": "rm_score_raw"}},
        "coverage": coverage, "agreement": [{"language": str(code), "rho:llm_score_raw": 0.5} for code in codes],
        "diversity": None,
    }))
    return path


CHILD = {
    "floor": "import prefsynth.report.html, matplotlib.pyplot, pandas, pyarrow.parquet",
    "report": "from prefsynth.report.html import write_report; write_report({run!r})",
    "peer": "import prefsynth.report.html, pandas as pd; frame = pd.read_parquet({run!r} + '/filter'); len(frame)",
}


def measure(kind: str, run: Path) -> dict:
    """`kind` in a fresh interpreter: its wall time and its own peak RSS."""
    code = (f"import time, resource, json; t0 = time.perf_counter(); {CHILD[kind].format(run=str(run))}; "
            "print(json.dumps({'wall_s': time.perf_counter() - t0, "
            "'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", type=int, default=1_000_000)
    parser.add_argument("--languages", type=int, default=101)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "prefsynth-report-scale")
    args = parser.parse_args()
    runs = {}
    for size in (args.candidates // 10, args.candidates):
        run = args.dir / f"run-{size}x{args.languages}"
        if not (run / "manifest.json").is_file():
            t0 = time.perf_counter()
            synthetic_run(run, size, args.languages)
            print(f"built {run} in {time.perf_counter() - t0:.1f} s", flush=True)
        runs[size] = run
    on_disk = sum(f.stat().st_size for f in (runs[args.candidates] / "filter").glob("*.parquet")) / 2**20
    print(f"{args.candidates:,} candidates, {args.languages} languages, filter/ {on_disk:.0f} MiB on disk")
    floor = measure("floor", runs[args.candidates])
    rows = [("import floor", floor)]
    rows += [(f"report, {size:,} candidates", measure("report", run)) for size, run in runs.items()]
    peer = measure("peer", runs[args.candidates])
    rows.append((f"peer: pd.read_parquet(filter), {args.candidates:,}", peer))
    for name, row in rows:
        print(f"{name:<48} wall {row['wall_s']:7.2f} s   peak RSS {row['peak_rss_mib']:8.0f} MiB")
    report = rows[2][1]
    above = lambda row: row["peak_rss_mib"] - floor["peak_rss_mib"]  # noqa: E731
    print(f"report / peer peak RSS: {report['peak_rss_mib'] / peer['peak_rss_mib']:.2f} whole, "
          f"{above(report) / max(above(peer), 1):.2f} above the import floor; "
          f"report at {args.candidates:,} / at {args.candidates // 10:,}: "
          f"{above(report) / max(above(rows[1][1]), 1):.2f} above the floor")
    layouts = json.loads((runs[args.candidates] / "report" / "plots.json").read_text())
    widest = max(max(v["width"], v["height"]) for v in layouts.values())
    print(f"{len(layouts)} plot images, largest side {widest} px, overlapping texts "
          f"{sum(v['overlap_count'] for v in layouts.values())}")


if __name__ == "__main__":
    main()
