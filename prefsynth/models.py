"""Model references: a Hub id, a local folder, or `fixture:NAME` (tiny offline models built on first use).

Validation (`check_ref`) never loads a model; `materialize` turns a reference into what
`vllm.LLM(model=...)` and `transformers.from_pretrained` accept, building fixtures when missing.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

FIXTURE_PREFIX = "fixture:"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _check(ref: str, base_dir: Path | None, *, fixtures: list[str], kind: str, marker: str, is_local_model) -> str:
    """The shared rules: a known fixture; an existing local model (judged by `is_local_model`); a
    Hub id, which with HF_HUB_OFFLINE=1 must have `marker` in the local cache."""
    if ref.startswith(FIXTURE_PREFIX):
        name = ref[len(FIXTURE_PREFIX):]
        if name not in fixtures:
            raise ValueError(f"unknown fixture model {name!r}: not a {kind}fixture; known: {sorted(fixtures)}")
        return ref
    candidate = Path(ref).expanduser()
    if not candidate.is_absolute() and base_dir is not None:
        candidate = base_dir / candidate
    if candidate.exists() or ref.startswith(("/", "./", "../", "~")):
        if not is_local_model(candidate):
            raise ValueError(f"{kind}model path {str(candidate)!r} does not exist or has no {marker}")
        return str(candidate.resolve())
    if _HUB_ID.match(ref):
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            from huggingface_hub import try_to_load_from_cache

            if not isinstance(try_to_load_from_cache(ref, marker), str):
                raise ValueError(f"Hub {kind}model {ref!r} is not in the local Hub cache and HF_HUB_OFFLINE=1")
        return ref
    raise ValueError(f"{kind}model {ref!r} is neither an existing folder, a Hub id (org/name) nor fixture:NAME")


def check_ref(ref: str, base_dir: Path | None = None) -> str:
    """Return the normalised reference (absolute path for local folders) or raise ValueError."""
    from prefsynth.fixtures import FIXTURES

    return _check(ref, base_dir, fixtures=list(FIXTURES), kind="", marker="config.json",
                  is_local_model=lambda path: (path / "config.json").is_file() or is_adapter(path))


def check_comet_ref(ref: str, base_dir: Path | None = None) -> str:
    """Like check_ref, for COMET checkpoints (a .ckpt file, or a folder with checkpoints/model.ckpt)."""
    from prefsynth.fixtures import FIXTURES

    comet = [name for name, group in FIXTURES.items() if group == "comet"]
    return _check(ref, base_dir, fixtures=comet, kind="COMET ", marker="checkpoints/model.ckpt",
                  is_local_model=lambda path: (path.is_file() and path.suffix == ".ckpt")
                  or (path / "checkpoints" / "model.ckpt").is_file())


def is_adapter(path: Path) -> bool:
    """A LoRA adapter folder (peft's save_pretrained, e.g. `prefsynth train` with `lora:`)."""
    return (path / "adapter_config.json").is_file() and not (path / "config.json").is_file()


def fingerprint(ref: str) -> str | None:
    """What changes when a local model folder is rewritten in place (a policy retrained at the same
    path, as `prefsynth iterate` does): each file's name, size and modification time. None for Hub
    ids and fixtures, whose name is their identity."""
    import hashlib
    import json

    folder = Path(ref)
    if ref.startswith(FIXTURE_PREFIX) or not folder.is_dir():
        return None
    files = {str(p.relative_to(folder)): [p.stat().st_size, p.stat().st_mtime_ns]
             for p in sorted(folder.rglob("*")) if p.is_file()}
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]


def materialize(ref: str) -> str:
    """What to hand to vLLM / transformers: a folder path or a Hub id. A LoRA adapter folder
    becomes its base model with the adapter merged in (cached, see `merged_adapter`)."""
    if ref.startswith(FIXTURE_PREFIX):
        from prefsynth.fixtures import ensure_fixture

        return str(ensure_fixture(ref[len(FIXTURE_PREFIX):]))
    if is_adapter(Path(ref)):
        return str(merged_adapter(Path(ref)))
    return ref


def merged_adapter(adapter: Path) -> Path:
    """The adapter's base model with the adapter merged in, as a full model folder under the cache
    (keyed by the adapter's files, so a retrained adapter is merged again). vLLM then serves it
    like any model: one code path for full and LoRA fine-tunes, and no LoRA kernels at decode."""
    import hashlib
    import json
    import shutil

    from filelock import FileLock

    from prefsynth.fixtures import cache_root

    digest = hashlib.sha256()
    for file in sorted(p for p in adapter.iterdir() if p.is_file()):
        digest.update(file.name.encode())
        with open(file, "rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    target = cache_root() / "merged" / digest.hexdigest()[:20]
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():
            return target
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        base_ref = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
        base = AutoModelForCausalLM.from_pretrained(materialize(base_ref), dtype="auto")
        merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
        staging = target.with_name(target.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        merged.save_pretrained(staging)
        tokenizer_source = adapter if (adapter / "tokenizer_config.json").is_file() else materialize(base_ref)
        AutoTokenizer.from_pretrained(tokenizer_source).save_pretrained(staging)
        staging.rename(target)
    return target
