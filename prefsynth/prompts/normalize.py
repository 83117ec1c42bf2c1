"""Turn raw source rows into the prompts table: chat messages, language, stable id; dedupe."""
from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import pyarrow as pa

from prefsynth import langs, schemas
from prefsynth.config import Source
from prefsynth.prompts.sources import file_format, read_rows, row_label, source_label

ROLES = ("system", "user", "assistant")
STAGE = "prompts"


class PromptSourceError(ValueError):
    """A bad row in a source with on_bad_row: error. Names file, row and field."""


def prompt_id(language: str | None, messages: list[dict]) -> str:
    """Stable id from content: the same prompt gets the same id in every run and every shard."""
    key = json.dumps([language, [[m["role"], _squash(m["content"])] for m in messages]], ensure_ascii=False)
    return "p" + hashlib.sha256(key.encode()).hexdigest()[:15]


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _field(row: dict, column: str | None, *, required: bool = False):
    if column is None:
        return None
    if column not in row:
        if required:
            raise KeyError(column)
        return None
    return row[column]


def _messages(row: dict, source: Source) -> list[dict]:
    columns = source.columns
    if columns.messages is not None:
        value = _field(row, columns.messages, required=True)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as error:
                raise ValueError(f"field {columns.messages!r}: not a JSON list of messages ({error.msg})") from None
        if not isinstance(value, list) or not value:
            raise ValueError(f"field {columns.messages!r}: expected a non-empty list of messages")
        messages = []
        for index, message in enumerate(value):
            if not isinstance(message, dict) or set(message) - {"role", "content"} or "role" not in message:
                raise ValueError(f"field {columns.messages!r}[{index}]: expected {{role, content}}")
            role, content = message["role"], message.get("content")
            if role not in ROLES:
                raise ValueError(f"field {columns.messages!r}[{index}].role: {role!r} is not one of {ROLES}")
            if not isinstance(content, str) or not content.strip():
                raise ValueError(f"field {columns.messages!r}[{index}].content: empty or not a string")
            messages.append({"role": role, "content": content})
        if messages[-1]["role"] != "user":
            raise ValueError(f"field {columns.messages!r}: the last message must be from the user")
    else:
        if columns.prompt is None:
            raise ValueError("source maps neither `prompt` nor `messages`")
        value = _field(row, columns.prompt, required=True)
        if not isinstance(value, str):
            raise ValueError(f"field {columns.prompt!r}: expected a string, got {type(value).__name__}")
        if not value.strip():
            raise ValueError(f"field {columns.prompt!r}: empty prompt")
        messages = [{"role": "user", "content": value}]
    system = _field(row, columns.system)
    if system is not None and not isinstance(system, str):
        raise ValueError(f"field {columns.system!r}: expected a string, got {type(system).__name__}")
    system = system or source.system_prompt
    if system and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system})
    return messages


def _language(row: dict, source: Source) -> str:
    value = _field(row, source.columns.language)
    if value is None or value == "":
        if source.language is None:
            # Without a language a prompt would skip the language-ID filter and reach the dataset unlabelled.
            raise ValueError(f"field {source.columns.language!r}: no language (missing or null), and the source "
                             "sets no `language:` default")
        return source.language
    if not isinstance(value, str):
        raise ValueError(f"field {source.columns.language!r}: expected a language code, got {type(value).__name__}")
    if value not in langs.codes():
        raise ValueError(f"field {source.columns.language!r}: language {value!r} is not in the registry")
    return value


def _rows_or_error(source: Source, label: str):
    """The source's rows; a source that cannot be opened at all is an error naming it."""
    try:
        rows = read_rows(source)
        first = next(rows, None)
    except Exception as error:  # pyarrow, datasets and OS errors all mean: this source is unreadable
        raise PromptSourceError(f"{label}: cannot read source: {type(error).__name__}: {error}") from error
    if first is not None:
        yield first
        yield from rows


def _empty(source: Source) -> str:
    if source.path is not None and file_format(source) == "jsonl":
        return "empty (0 bytes)" if Path(source.path).stat().st_size == 0 else "empty (only blank lines)"
    return "empty (no rows)"


def load_prompts(sources: list[Source], limit: int | None = None) -> tuple[pa.Table, pa.Table]:
    """Read every source; return (prompts, rejects), which may be empty. See read_sources."""
    prompts, rejects, _ = read_sources(sources, limit, require_prompts=False)
    return prompts, rejects


def read_sources(sources: list[Source], limit: int | None = None, *,
                 require_prompts: bool = True) -> tuple[pa.Table, pa.Table, list[str]]:
    """Read every source; return (prompts, rejects, warnings).

    Raises PromptSourceError on a bad row of a source with on_bad_row: error, and when the sources
    hold no prompt at all (unless not `require_prompts`). Later duplicates of a prompt are rejected, naming the first. Warnings
    name an empty source, and ids that a source gives to different prompts of one language
    (`duplicate_source_id`: both are kept, since ids often mark parallel or paraphrased prompts;
    the same id across languages is the usual layout of a parallel set and is not reported)."""
    prompts: list[dict] = []
    rejects: list[dict] = []
    warnings: list[str] = []
    described: list[str] = []
    first_seen: dict[str, str] = {}
    for source in sources:
        label = source_label(source)
        seen, kept, rejected_before, complete = 0, len(prompts), len(rejects), True
        ids: dict[tuple[str, str], tuple[str, str]] = {}  # (language, source id) -> (prompt id, where)
        shared: list[str] = []
        for position, row, problem in _rows_or_error(source, label):
            if limit is not None and len(prompts) >= limit:
                complete = False
                break
            seen += 1
            try:
                if problem is not None:
                    raise ValueError(problem)
                messages = _messages(row, source)
                language = _language(row, source)
            except KeyError as missing:
                problem = f"column {missing.args[0]!r} is missing"
            except ValueError as error:
                problem = str(error)
            where = f"{label}: {row_label(source, position)}"
            if problem is not None:
                if source.on_bad_row == "error":
                    raise PromptSourceError(f"{where}: {problem} (set on_bad_row: skip to record and continue)")
                rejects.append({"stage": STAGE, "source": label, "source_row": position, "reason": "bad_row", "detail": problem})
                continue
            pid = prompt_id(language, messages)
            if pid in first_seen:
                rejects.append({
                    "stage": STAGE, "prompt_id": pid, "source": label, "source_row": position,
                    "reason": "duplicate_prompt", "detail": f"same prompt as {first_seen[pid]}",
                })
                continue
            first_seen[pid] = where
            source_id = _field(row, source.columns.id)
            source_id = None if source_id is None else str(source_id)
            if source_id is not None:
                earlier = ids.setdefault((language, source_id), (pid, row_label(source, position)))
                if earlier[0] != pid:
                    shared.append(f"id {source_id!r} ({language}) at {earlier[1]} and {row_label(source, position)}")
            prompts.append({
                "prompt_id": pid, "language": language, "messages": messages, "source": label,
                "source_row": position, "source_id": source_id, "source_prompt_id": pid, "origin": "source",
            })
        if shared:
            warnings.append(f"{label}: duplicate_source_id: {len(shared)} row(s) reuse an id of a different prompt in "
                            f"the same language, all kept (first: {shared[0]})")
        if seen == 0 and complete:
            warnings.append(f"{label}: {_empty(source)}, no prompts from this source")
            described.append(f"{label}: {_empty(source)}")
        elif complete:
            reasons = Counter(r["reason"] for r in rejects[rejected_before:])
            detail = ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items()))
            described.append(f"{label}: {seen} row(s), {len(prompts) - kept} kept" + (f" ({detail})" if detail else ""))
    if not prompts and require_prompts:
        raise PromptSourceError("no prompts to build from: " + "; ".join(described)
                                + ". Check the sources' files and their `columns:` mapping.")
    return schemas.from_rows(prompts, schemas.PROMPTS), schemas.rejects_table(rejects), warnings


def balance_prompts(prompts: pa.Table, balance, seed: int) -> tuple[pa.Table, pa.Table]:
    """Seeded stratified sample by language; returns (kept prompts in source order, rejects)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    languages = np.asarray(prompts.column("language").to_pylist(), dtype=object)
    keep = np.zeros(prompts.num_rows, dtype=bool)
    rejects = []
    for code in dict.fromkeys(languages.tolist()):
        rows = np.flatnonzero(languages == code)
        cap = balance.cap(code)
        chosen = rows if cap is None or cap >= len(rows) else np.sort(rng.choice(rows, size=cap, replace=False))
        keep[chosen] = True
        detail = f"{code}: kept {len(chosen)} of {len(rows)}"
        ids = prompts.column("prompt_id").to_pylist()
        rejects += [{"stage": STAGE, "prompt_id": ids[i], "reason": "over_quota", "detail": detail}
                    for i in np.setdiff1d(rows, chosen)]
    return prompts.filter(pa.array(keep)), schemas.rejects_table(rejects)
