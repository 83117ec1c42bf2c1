"""The language registry: one YAML record per language under `langs/` (languages are data)."""
from __future__ import annotations

import functools
from pathlib import Path

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
    # Where lid.176 is known to be weak for the language (few training data, close relatives), the
    # language-ID filter's default min_prob for it; a pipeline's `thresholds` still win.
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
