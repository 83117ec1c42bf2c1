"""The language registry: one YAML record per language under `langs/` (languages are data)."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict


# Template name -> the placeholders it must contain, each exactly once.
TEMPLATE_PLACEHOLDERS = {
    "system_prompt": (),
    "generation_instruction": ("prompt",),
    "translation_instruction": ("source_language", "text"),
    "diverse_instruction": ("k", "prompt"),
    "judge_rubric": ("prompt", "response"),
}


class Templates(BaseModel):
    """In-language prompts used by generation, translation, diverse sampling and judging.
    `fallback: true` marks English stand-ins; code that uses them records that it did."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fallback: bool
    system_prompt: str
    generation_instruction: str
    translation_instruction: str
    diverse_instruction: str
    judge_rubric: str


class Language(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str  # BCP-47
    name: str
    native_name: str
    script: str  # ISO 15924
    flores200: str
    fasttext: str | None  # lid.176 label without __label__; null where lid.176 has none
    nllb: str
    xlmr: bool
    direction: str
    resource_level: str
    # The language-ID backend the filter's `backend: auto` checks this language with, chosen by
    # accuracy measured on tests/data/langid_heldout (benchmarks/langid_accuracy.py); null: no
    # backend has a label for it (a pipeline must then name it in `script_only`).
    lid_backend: Literal["lid176", "cld3", "cld2", "lingua", "heliport"] | None = None
    # Registry codes whose detection also counts as this language: close relatives no backend
    # tells apart reliably (ms/id, hr/bs/sr). A documented group check, named in the card.
    lid_group: list[str] = []
    # The filter's default min_prob for this language with its `lid_backend`, where that backend's
    # probabilities run low on it; a pipeline's `thresholds` still win.
    lid_min_prob: float | None = None
    templates: Templates | None = None


def registry_dir() -> Path:
    """`langs/` of a source checkout, else the copy packaged into the wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "langs", here / "_langs"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("language registry not found (langs/ or prefsynth/_langs)")


@functools.cache
def load() -> dict[str, Language]:
    """All records, keyed by code."""
    records = {}
    for path in sorted(registry_dir().glob("*.yaml")):
        record = Language(**yaml.safe_load(path.read_text(encoding="utf-8")))
        if record.code != path.stem:
            raise ValueError(f"{path}: code {record.code!r} does not match the file name")
        records[record.code] = record
    return records


def codes() -> set[str]:
    return set(load())


def get(code: str) -> Language:
    try:
        return load()[code]
    except KeyError:
        raise KeyError(f"language {code!r} is not in the registry ({registry_dir()})") from None


@functools.cache
def lid_accuracy() -> dict:
    """Held-out language-ID accuracy per backend and language (langs/lid-accuracy.json, written by
    benchmarks/langid_accuracy.py --write); {} where the file is missing."""
    import json

    path = registry_dir() / "lid-accuracy.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def measured(code: str, backend: str) -> dict | None:
    """{kept, english_through, relative, relative_through, ...} of `backend` on `code`'s held-out
    sentences through the language_id filter, or None where it was not measured (no label)."""
    return lid_accuracy().get("backends", {}).get(backend, {}).get(code)
