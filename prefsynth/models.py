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


def check_ref(ref: str, base_dir: Path | None = None) -> str:
    """Return the normalised reference (absolute path for local folders) or raise ValueError."""
    from prefsynth.fixtures import FIXTURES

    if ref.startswith(FIXTURE_PREFIX):
        name = ref[len(FIXTURE_PREFIX):]
        if name not in FIXTURES:
            raise ValueError(f"unknown fixture model {name!r}; known: {sorted(FIXTURES)}")
        return ref
    candidate = Path(ref).expanduser()
    if not candidate.is_absolute() and base_dir is not None:
        candidate = base_dir / candidate
    if candidate.exists() or ref.startswith(("/", "./", "../", "~")):
        if not (candidate / "config.json").is_file():
            raise ValueError(
                f"model path {str(candidate)!r} does not exist or has no config.json"
            )
        return str(candidate.resolve())
    if _HUB_ID.match(ref):
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            from huggingface_hub import try_to_load_from_cache

            if not isinstance(try_to_load_from_cache(ref, "config.json"), str):
                raise ValueError(f"Hub model {ref!r} is not in the local cache and HF_HUB_OFFLINE=1")
        return ref
    raise ValueError(
        f"model {ref!r} is neither an existing folder, a Hub id (org/name) nor fixture:NAME"
    )


def check_comet_ref(ref: str, base_dir: Path | None = None) -> str:
    """Like check_ref, for COMET checkpoints (which have checkpoints/model.ckpt, no config.json)."""
    from prefsynth.fixtures import FIXTURES

    if ref.startswith(FIXTURE_PREFIX):
        comet = sorted(FIXTURE_PREFIX + name for name, group in FIXTURES.items() if group == "comet")
        if ref not in comet:
            raise ValueError(f"{ref!r} is not a COMET fixture; COMET fixtures: {', '.join(comet)}")
        return ref
    candidate = Path(ref).expanduser()
    if not candidate.is_absolute() and base_dir is not None:
        candidate = base_dir / candidate
    if candidate.exists() or ref.startswith(("/", "./", "../", "~")):
        if candidate.is_file() and candidate.suffix == ".ckpt" or (candidate / "checkpoints" / "model.ckpt").is_file():
            return str(candidate.resolve())
        raise ValueError(f"COMET model path {str(candidate)!r}: expected a .ckpt file or a folder with checkpoints/model.ckpt")
    if _HUB_ID.match(ref):
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            from huggingface_hub import try_to_load_from_cache

            if not isinstance(try_to_load_from_cache(ref, "checkpoints/model.ckpt"), str):
                raise ValueError(f"COMET model {ref!r} is not in the local Hub cache and HF_HUB_OFFLINE=1")
        return ref
    raise ValueError(f"COMET model {ref!r} is neither a checkpoint, a Hub id (org/name) nor fixture:NAME")


def materialize(ref: str) -> str:
    """What to hand to vLLM / transformers: a folder path or a Hub id."""
    if ref.startswith(FIXTURE_PREFIX):
        from prefsynth.fixtures import ensure_fixture

        return str(ensure_fixture(ref[len(FIXTURE_PREFIX):]))
    return ref
