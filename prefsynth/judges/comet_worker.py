"""COMET scoring worker. Runs in .venv-comet (unbabel-comet pins transformers<5, the main
environment has 5.x), so it imports only the stdlib, torch, numpy and comet, never prefsynth:

    .venv-comet/bin/python comet_worker.py MODEL [--batch-size 16] [--device auto|cpu|cuda]

MODEL is a checkpoint file (.../checkpoints/model.ckpt) or a Hub name (Unbabel/wmt22-comet-da).
It loads the model once, then answers one JSON line on stdout per JSON line read on stdin:

    first line out   {"ok": true, "ready": true, "pid", "loads", "device", "references", "model_class", "load_s"}
    request          {"samples": [{"src": ..., "mt": ..., "ref": ...}, ...]}
    answer           {"ok": true, "scores": [...], "pid", "loads", "requests"} or {"ok": false, "error": "..."}

`references` is "required", "optional" (used when given) or "unused". Samples travel inline: a
256-sample shard is 100-250 kB of JSON, encoded in under a millisecond, next to seconds of
compute. Everything else the libraries print goes to stderr; stdout carries only the protocol.
It exits at end of input.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
import warnings

# Run as a script, this folder comes first on sys.path, and it holds prefsynth's own comet.py: drop
# it so that `import comet` finds unbabel-comet (CometScorer also starts the worker with -I).
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != HERE]
# Keep the protocol stream private: later writes to fd 1 (Lightning banners, C libraries) land on
# stderr instead of corrupting the answers.
PROTOCOL = os.fdopen(os.dup(1), "w", encoding="utf-8")
os.dup2(2, 1)
sys.stdout = sys.stderr
LOADS = 0


def answer(message: dict) -> None:
    PROTOCOL.write(json.dumps(message) + "\n")
    PROTOCOL.flush()


def quiet_libraries() -> None:
    """Drop the per-call Lightning banners ("GPU available: ...") that would otherwise fill stderr
    once per request. Lightning sets its loggers to INFO when imported: call this after."""
    import logging

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def load(model: str):
    """comet.load_from_checkpoint on a checkpoint file; a Hub name is downloaded (or found in the
    HF cache) first. Checkpoints load with local_files_only=True: their encoder folder is local
    (fixtures) or was cached with them; Hub models may still need their encoder's tokenizer."""
    import comet

    global LOADS
    if os.path.isfile(model):
        loaded = comet.load_from_checkpoint(model, local_files_only=True)
    else:
        try:
            checkpoint = comet.download_model(model)
        except KeyError as error:
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            offline = " (HF_HUB_OFFLINE=1: only the local HF cache is searched)" if offline else ""
            raise RuntimeError(f"COMET model {model!r} could not be found or downloaded{offline}; gated models such as "
                               f"Unbabel/wmt22-cometkiwi-da need an accepted licence and HF_TOKEN") from error
        loaded = comet.load_from_checkpoint(checkpoint)
    LOADS += 1
    return loaded


def references(model) -> str:
    """How the model uses `ref`: RegressionMetric needs it, CometKiwi-style models ignore it,
    xCOMET-style unified models use it when present."""
    if model.requires_references():
        return "required"
    return "optional" if "ref" in (getattr(model.hparams, "input_segments", None) or []) else "unused"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    args = parser.parse_args()
    started = time.perf_counter()
    warnings.filterwarnings("ignore", message=".*(pkg_resources is deprecated|LeafSpec).*")  # import-time noise
    try:
        import torch

        import comet  # noqa: F401  (an import failure means the environment is wrong, not the model)
    except Exception as error:
        answer({"ok": False, "unavailable": True, "error": f"import comet failed: {type(error).__name__}: {error}"})
        sys.exit(1)
    quiet_libraries()
    try:
        if args.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but torch in the COMET environment sees no GPU")
        gpus = 1 if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else 0
        model = load(args.model)
    except Exception as error:
        traceback.print_exc()
        answer({"ok": False, "error": f"loading COMET model {args.model!r} failed: {type(error).__name__}: {error}"})
        sys.exit(1)
    answer({"ok": True, "ready": True, "pid": os.getpid(), "loads": LOADS, "device": "cuda" if gpus else "cpu",
            "references": references(model), "model_class": type(model).__name__,
            "load_s": round(time.perf_counter() - started, 3)})
    requests = 0
    for line in sys.stdin:
        requests += 1
        try:
            samples = json.loads(line)["samples"]
            prediction = model.predict(samples, batch_size=args.batch_size, gpus=gpus, progress_bar=False,
                                       length_batching=True)
            answer({"ok": True, "scores": [float(s) for s in prediction.scores], "pid": os.getpid(), "loads": LOADS,
                    "requests": requests})
        except Exception as error:  # one bad request does not take the loaded model down
            traceback.print_exc()
            answer({"ok": False, "error": f"{type(error).__name__}: {error}", "pid": os.getpid(), "requests": requests})


if __name__ == "__main__":
    main()
