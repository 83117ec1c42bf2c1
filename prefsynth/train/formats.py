"""Any preference table TRL's DPOTrainer accepts -> one canonical table, with bad rows counted.

Accepted (TRL's names): conversational (`prompt`, `chosen`, `rejected` as lists of {role, content}
messages) or standard (plain strings); explicit prompt, or implicit (no `prompt` column: chosen and
rejected are whole conversations / texts and the prompt is their shared start, cut the way TRL's
`extract_prompt` cuts it); prefsynth's list-wise rows (`chosen_ids` / `rejected_ids`: several
answers per side, optional `weights`). Ids (`prompt_id`, `chosen_id`, `rejected_id`) are optional:
without them the keys are content hashes.

Canonical columns: prompt, chosen, rejected (pairs: one answer per side; lists: lists of answers),
weights (lists), key (one per row, for caches), prompt_key (rows of one prompt share it: the eval
split keeps them together). A row that cannot be trained on is left out and counted by reason.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefsynth.train.sources import DatasetSourceError

MISSING, EMPTY, IDENTICAL, TOO_LONG = "missing field", "empty answer", "chosen identical to rejected", "prompt over max_length"


@dataclass
class Rows:
    """Canonical rows of one kind (pairs or lists) and style (conversational or standard)."""

    table: pa.Table
    kind: str  # pairs | lists
    conversational: bool
    rejected: Counter = field(default_factory=Counter)  # reason -> rows left out

    @property
    def num_rows(self) -> int:
        return self.table.num_rows


def _is_messages(kind: pa.DataType) -> bool:
    return pa.types.is_list(kind) or pa.types.is_large_list(kind)


def _style(table: pa.Table, name: str, label: str, lists: bool) -> bool:
    """True for a conversational column, False for plain text; anything else is an error naming the
    column and the first row that shows it."""
    kind = table.schema.field(name).type
    if lists:
        if not _is_messages(kind):
            _bad_type(table, name, label, "a list of answers")
        kind = kind.value_type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return False
    if _is_messages(kind) and pa.types.is_struct(kind.value_type):
        names = {kind.value_type.field(i).name for i in range(kind.value_type.num_fields)}
        if {"role", "content"} <= names:
            return True
    _bad_type(table, name, label, "a string or a list of {role, content} messages")


def _bad_type(table: pa.Table, name: str, label: str, expected: str):
    column = table[name]
    first = next((i for i, value in enumerate(column.to_pylist()) if value is not None), None)
    shown = "" if first is None else f"; first bad row {first}: {json.dumps(column[first].as_py(), default=str)[:120]}"
    raise DatasetSourceError(f"{label}: column {name!r} has type {column.type}, expected {expected}{shown}")


def _hashes(values: list) -> list[str]:
    return [hashlib.sha256(json.dumps(v, ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:16] for v in values]


def extract_prompt(chosen, rejected):
    """TRL's extract_prompt: the shared start of chosen and rejected (turns or characters); a space
    just before the split goes with the answers."""
    idx = 0
    for idx in range(min(len(chosen), len(rejected))):
        if chosen[idx] != rejected[idx]:
            if chosen[idx - 1] == " ":
                idx -= 1
            break
    return chosen[:idx], chosen[idx:], rejected[idx:]


def _implicit(table: pa.Table) -> pa.Table:
    split = [extract_prompt(c, r) for c, r in zip(table["chosen"].to_pylist(), table["rejected"].to_pylist())]
    kind = table.schema.field("chosen").type
    columns = {name: pa.array([s[i] for s in split], type=kind) for i, name in enumerate(("prompt", "chosen", "rejected"))}
    return table.drop_columns(["chosen", "rejected"]).append_column("prompt", columns["prompt"]) \
        .append_column("chosen", columns["chosen"]).append_column("rejected", columns["rejected"])


def _empty(column: pa.ChunkedArray, conversational: bool, lists: bool) -> np.ndarray:
    """Rows with an empty answer (no text, no messages, or a message without content)."""
    values = column.to_pylist()
    if lists:
        return np.array([not v or any(_empty_answer(a, conversational) for a in v) for v in values], dtype=bool)
    return np.array([_empty_answer(v, conversational) for v in values], dtype=bool)


def _empty_answer(answer, conversational: bool) -> bool:
    if answer is None:
        return False  # counted as missing
    if conversational:
        return not answer or all(not (m.get("content") or "").strip() for m in answer)
    return not answer.strip()


def _null_messages(column: pa.ChunkedArray, lists: bool) -> np.ndarray:
    """Rows where a message lacks its role or content (null in the struct)."""
    flat = column
    if lists:
        flat = pc.list_flatten(column)
        parents = pc.list_parent_indices(column).to_numpy()
    else:
        parents = None
    messages = pc.list_flatten(flat)
    owners = pc.list_parent_indices(flat).to_numpy()
    if parents is not None:
        owners = parents[owners]
    bad = np.zeros(len(column), dtype=bool)
    for name in ("role", "content"):
        missing = pc.is_null(pc.struct_field(messages, name)).to_numpy(zero_copy_only=False)
        bad[owners[missing]] = True
    return bad


def canonical(table: pa.Table, label: str) -> Rows:
    """Canonical rows of one source; raises DatasetSourceError for what no row could fix."""
    names = set(table.column_names)
    lists = "chosen_ids" in names or "rejected_ids" in names
    missing = [name for name in ("chosen", "rejected") if name not in names]
    if missing:
        raise DatasetSourceError(f"{label}: no column {' or '.join(missing)} (columns: {', '.join(table.column_names)}); "
                                 "a preference dataset has chosen and rejected, and prompt unless it is implicit")
    conversational = _style(table, "chosen", label, lists)
    for name in ("rejected",) + (("prompt",) if "prompt" in names else ()):
        style = _style(table, name, label, lists and name != "prompt")
        if style != conversational:
            raise DatasetSourceError(f"{label}: column {name!r} is {'conversational' if style else 'plain text'} but "
                                     f"chosen is {'conversational' if conversational else 'plain text'}")
    rejected: Counter = Counter()
    required = ["prompt", "chosen", "rejected"] if "prompt" in names else ["chosen", "rejected"]
    null = np.zeros(table.num_rows, dtype=bool)
    for name in required:
        null |= pc.is_null(table[name]).to_numpy(zero_copy_only=False)
    rejected[MISSING] += int(null.sum())
    table = table.filter(pa.array(~null))
    if conversational:
        null = np.zeros(table.num_rows, dtype=bool)
        for name in required:
            null |= _null_messages(table[name], lists and name != "prompt")
        rejected[MISSING] += int(null.sum())
        table = table.filter(pa.array(~null))
    if "prompt" not in names:
        if lists:
            raise DatasetSourceError(f"{label}: list-wise rows (chosen_ids / rejected_ids) need a prompt column")
        table = _implicit(table)
    empty = _empty(table["chosen"], conversational, lists) | _empty(table["rejected"], conversational, lists)
    chosen, other = table["chosen"].to_pylist(), table["rejected"].to_pylist()
    identical = np.array([c == r or (lists and any(a in r for a in c)) for c, r in zip(chosen, other)], dtype=bool) & ~empty
    rejected[EMPTY] += int(empty.sum())
    rejected[IDENTICAL] += int(identical.sum())
    table = table.filter(pa.array(~(empty | identical)))
    return Rows(_keyed(table, lists), "lists" if lists else "pairs", conversational, rejected)


def _keyed(table: pa.Table, lists: bool) -> pa.Table:
    names = set(table.column_names)
    prompts = table["prompt"].to_pylist()
    prompt_key = table["prompt_id"].to_pylist() if "prompt_id" in names else _hashes(prompts)
    if lists and {"prompt_id", "chosen_ids", "rejected_ids"} <= names:
        key = [f"{p}/{'/'.join(c + r)}" for p, c, r in zip(prompt_key, table["chosen_ids"].to_pylist(),
                                                           table["rejected_ids"].to_pylist())]
    elif not lists and {"prompt_id", "chosen_id", "rejected_id"} <= names:
        key = ["/".join(k) for k in zip(prompt_key, table["chosen_id"].to_pylist(), table["rejected_id"].to_pylist())]
    else:
        key = _hashes([[p, c, r] for p, c, r in zip(prompts, table["chosen"].to_pylist(), table["rejected"].to_pylist())])
    columns = {"prompt": table["prompt"], "chosen": table["chosen"], "rejected": table["rejected"],
               "key": pa.array(key, pa.string()), "prompt_key": pa.array([str(p) for p in prompt_key], pa.string())}
    if lists:
        columns["weights"] = table["weights"] if "weights" in names else pa.nulls(table.num_rows, pa.list_(pa.float64()))
    return pa.table(columns)


def check_one_format(parts: list[Rows], labels: list[str]) -> None:
    """A mixture's sources must agree on kind (pairs / lists) and style (conversational / plain text)."""
    first = parts[0]
    describe = lambda r: f"{'conversational' if r.conversational else 'plain-text'} {r.kind}"  # noqa: E731
    for part, label in zip(parts[1:], labels[1:]):
        if (part.kind, part.conversational) != (first.kind, first.conversational):
            raise DatasetSourceError(f"{label} holds {describe(part)} but {labels[0]} holds {describe(first)}: "
                                     "a mixture needs one format")
