"""COMET through prefsynth's CometScorer (worker process, shards over a pipe) vs unbabel-comet's
own `predict` over the same samples in one call, one run.

    .venv/bin/python benchmarks/comet.py [--samples 2000] [--shard-size 256] [--repeats 3] [--model REF]

Without --model it builds a random-weight COMET with XLM-R-base's shape (12 layers, hidden 768,
12 heads, FFN 3072, wmt22-comet-da's head 3072-1024; vocabulary 4,000 from our corpora) into a
temporary folder, with the fixtures' recipe. Direct: a .venv-comet process that loads the model
and times `model.predict(all samples)`. Stage: `CometScorer.score(shard)` per shard, timed from the
first request to the last result. Both get one small warm-up call first; start-up and model load
are reported apart. Repeats are interleaved; medians are compared. Target: overhead <= 10%.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from prefsynth.judges.comet import CometScorer, comet_python, resolve_comet_model

REPO = Path(__file__).resolve().parent.parent
CORPORA = [REPO / "prefsynth/fixtures/data/demo_corpus.jsonl", REPO / "tests/data/langid_sentences.jsonl"]
BASE_SHAPE = ["--layers", "12", "--hidden", "768", "--heads", "12", "--intermediate", "3072",
              "--head-sizes", "3072", "1024", "--vocab-size", "4000", "--fit-steps", "0"]

# The direct side: load once, then one full predict per line read ("warm" = a 16-sample warm-up).
DIRECT = """
import json, sys, time
started = time.perf_counter()
import comet
imported = time.perf_counter()
model = comet.load_from_checkpoint(sys.argv[1], local_files_only=True)
loaded = time.perf_counter()
samples, batch_size = json.load(open(sys.argv[2])), int(sys.argv[3])
print(json.dumps({"import_s": imported - started, "load_s": loaded - imported}), flush=True)
for line in sys.stdin:
    batch = samples[:16] if line.strip() == "warm" else samples
    t = time.perf_counter()
    scores = model.predict(batch, batch_size=batch_size, gpus=0, progress_bar=False, length_batching=True).scores
    print(json.dumps({"s": time.perf_counter() - t, "scores": list(scores)}), flush=True)
"""


def triples(n: int) -> list[dict]:
    """src/mt/ref triples in many languages and lengths: demo prompts with an answer and the best
    answer, and sentences (one or two) paired across languages."""
    corpus = [json.loads(line) for line in CORPORA[0].read_text(encoding="utf-8").splitlines() if line.strip()]
    sentences = [json.loads(line)["text"] for line in CORPORA[1].read_text(encoding="utf-8").splitlines() if line.strip()]
    out = []
    for row in corpus:
        best = max(row["responses"], key=lambda r: r["score"])["text"]
        out += [{"src": row["prompt"], "mt": r["text"], "ref": best} for r in row["responses"]]
    i = 0
    while len(out) < n:
        pick = lambda k: sentences[(i * k) % len(sentences)]  # noqa: E731
        src = pick(1) + (" " + pick(3) if i % 3 == 0 else "")
        out.append({"src": src, "mt": pick(7) + (" " + pick(11) if i % 4 == 0 else ""), "ref": pick(13)})
        i += 1
    return out[:n]


def build_base_model(folder: Path) -> str:
    out = folder / "comet-xlmr-base-shape"
    corpora = [arg for path in CORPORA for arg in ("--corpus", str(path))]
    subprocess.run([comet_python(), "-I", str(REPO / "prefsynth/fixtures/tiny_comet.py"), str(out), "--kind", "ref",
                    *BASE_SHAPE, *corpora], check=True, capture_output=True)
    return str(out / "checkpoints" / "model.ckpt")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", help="A COMET reference (default: a random XLM-R-base-shaped model).")
    args = parser.parse_args()
    samples = triples(args.samples)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = resolve_comet_model(args.model) if args.model else build_base_model(Path(tmp))
        (Path(tmp) / "samples.json").write_text(json.dumps(samples))
        direct = subprocess.Popen([comet_python(), "-I", "-c", DIRECT, checkpoint, str(Path(tmp) / "samples.json"),
                                   str(args.batch_size)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)

        def run_direct(what: str) -> dict:
            direct.stdin.write(what + "\n")
            direct.stdin.flush()
            return json.loads(direct.stdout.readline())

        direct_load = json.loads(direct.stdout.readline())
        run_direct("warm")
        started = time.perf_counter()
        scorer = CometScorer(checkpoint, batch_size=args.batch_size, device="cpu")
        startup = time.perf_counter() - started
        scorer.score(samples[:16])
        shards = [samples[i:i + args.shard_size] for i in range(0, len(samples), args.shard_size)]
        times = {"direct": [], "stage": []}
        for _ in range(args.repeats):
            result = run_direct("all")
            times["direct"].append(result["s"])
            t = time.perf_counter()
            ours = np.concatenate([scorer.score(shard) for shard in shards])
            times["stage"].append(time.perf_counter() - t)
        scorer.close()
        direct.stdin.close()
        direct.wait()
    reference = np.array(result["scores"])
    d, s = statistics.median(times["direct"]), statistics.median(times["stage"])
    print(f"machine: {platform.machine()} cores={os.cpu_count()} samples={len(samples)} shard_size={args.shard_size} "
          f"batch_size={args.batch_size} repeats={args.repeats} model={args.model or 'random XLM-R-base shape'}")
    print(f"direct: import comet {direct_load['import_s']:.1f} s, load_from_checkpoint {direct_load['load_s']:.1f} s")
    print(f"stage : CometScorer start-up incl. import and load {startup:.1f} s (worker's load_s {scorer.info['load_s']:.1f})")
    print(f"direct predict (one call)    : {d:.2f} s  {len(samples) / d:.1f} samples/s  runs {[round(x, 2) for x in times['direct']]}")
    print(f"CometScorer ({len(shards)} shards)     : {s:.2f} s  {len(samples) / s:.1f} samples/s  runs {[round(x, 2) for x in times['stage']]}")
    print(f"ratio stage/direct throughput = {d / s:.3f}, overhead {100 * (s / d - 1):+.1f}% (target <= 10%); "
          f"max |score difference| {np.abs(ours - reference).max():.2e}")


if __name__ == "__main__":
    main()
