"""The language-ID rule: is each candidate in its prompt's language, and in its script?

Checks, first failure wins: text too short to judge (`lid_too_short`), letters mostly outside
the language's script (`script_mismatch:<script>`, e.g. Hindi in Latin script), detected
language differs (`wrong_language:<code>`), detected language right but not confident
(`lid_low_confidence:<code>`). Each language is read by the backend `backend_for` resolves (its
registry record's measured choice under `backend: auto`); a language no installed backend can
read is refused (`LanguageCheckError`) unless the rule lists it in `script_only`, where only the
script check runs. Prompts without a language are not checked.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa

from prefsynth import langid, langs, lid_backends
from prefsynth.config import LanguageIdFilter


class LanguageCheckError(ValueError):
    """A language the filter cannot check as configured."""


def backend_for(rule: LanguageIdFilter, code: str) -> str | None:
    """The backend that checks `code` under `rule`; None: the script check only (`script_only`)."""
    if code in rule.script_only:
        return None
    record = langs.get(code)
    name = rule.backends.get(code, rule.backend)
    if name == "auto":
        name = record.lid_backend
        if name is None:
            raise LanguageCheckError(
                f"language_id filter: no language-ID backend can check {code} ({record.name}): none has a label "
                f"for it. Add `script_only: [{code}]` to check its script alone (the dataset card will say so).")
    if not lid_backends.available(name):
        raise LanguageCheckError(
            f"language_id filter: {code} ({record.name}) is checked with {name}, which is not installed: "
            f"{lid_backends.BACKENDS[name].install}. Or name another backend for it (`backends: {{{code}: ...}}`) "
            f"or add `script_only: [{code}]`.")
    if lid_backends.record_label(record, name) is None:
        raise LanguageCheckError(
            f"language_id filter: backend {name} has no label for {code} ({record.name}); `backend: auto` "
            f"uses {record.lid_backend or 'none'} for it, or add `script_only: [{code}]`.")
    return name


def check_languages(rule: LanguageIdFilter, codes: Iterable[str]) -> dict[str, str | None]:
    """Resolve every language before a build spends time on it: {code: backend}. Raises one
    LanguageCheckError naming every language that cannot be checked."""
    resolved, problems = {}, []
    for code in sorted(set(codes)):
        try:
            resolved[code] = backend_for(rule, code)
        except LanguageCheckError as error:
            problems.append(str(error))
    if problems:
        raise LanguageCheckError("\n".join(problems))
    return resolved


def check_filters(filters: list, codes: Iterable[str]) -> None:
    """Every language_id filter of a build against the build's languages (before any model loads)."""
    codes = {code for code in codes if code}
    for rule in filters:
        if isinstance(rule, LanguageIdFilter):
            check_languages(rule, codes)


def weak_checks(rule: LanguageIdFilter, codes: Iterable[str]) -> list[str]:
    """One sentence per language whose check is weaker than the bar (kept >= 95%, wrong-language
    answers through <= 5% on held-out sentences): checked on its script alone, as a group with
    close relatives, or with a backend measured below the bar. For the dataset card."""
    notes = []
    for code in sorted(set(codes) & langs.codes()):  # the coverage table's "und" is no language
        record = langs.get(code)
        try:
            backend = backend_for(rule, code)
        except LanguageCheckError:
            continue
        if backend is None:
            notes.append(f"{code} ({record.name}): script check only (`script_only`): a wrong-language answer in "
                         f"the {record.script} script passes.")
            continue
        if record.lid_group:
            names = ", ".join(f"{other} ({langs.get(other).name})" for other in record.lid_group)
            notes.append(f"{code} ({record.name}): checked as a group with {names}: answers in those languages "
                         "pass as this one (no backend here tells them apart reliably).")
        figures = langs.measured(code, backend)
        if figures is None:
            notes.append(f"{code} ({record.name}): {backend} was not measured on this language's held-out sentences.")
        elif figures["kept"] < 0.95 or max(figures["english_through"], figures["relative_through"]) > 0.05:
            notes.append(f"{code} ({record.name}): {backend} keeps {figures['kept']:.0%} of held-out "
                         f"{record.name} sentences and lets {figures['english_through']:.0%} of English and "
                         f"{figures['relative_through']:.0%} of {figures['relative']} through"
                         + (f" (the registry's choice is {record.lid_backend})." if backend != record.lid_backend else "."))
    return notes


def _accepts(expected: np.ndarray, detected: np.ndarray) -> np.ndarray:
    """Whether each detection counts as its expected language: the code itself, a group label
    containing it ("id|ms"), or a code of the record's `lid_group`. Decided once per distinct pair."""
    expected_index, expected_codes = pd.factorize(expected)
    detected_index, detected_codes = pd.factorize(detected)
    pairs, index = np.unique(expected_index * len(detected_codes) + detected_index, return_inverse=True)
    verdicts = []
    for pair in pairs.tolist():
        code, found = expected_codes[pair // len(detected_codes)], set(detected_codes[pair % len(detected_codes)].split("|"))
        verdicts.append(code in found or bool(found & set(langs.get(code).lid_group)))
    return np.array(verdicts, dtype=bool)[index.reshape(-1)]


def language_checks(rule: LanguageIdFilter, table: pa.Table) -> tuple[pa.Array, pa.Array, dict[str, pa.Array]]:
    expected = table["language"].to_numpy(zero_copy_only=False).astype(object)
    language_index, language_codes = pd.factorize(expected)  # integer compares per language
    backend_of = check_languages(rule, language_codes)
    n = table.num_rows
    min_prob = np.full(n, rule.min_prob)
    backends = np.full(n, None, dtype=object)
    scripts = np.empty(n, dtype=object)
    rows_of = [np.flatnonzero(language_index == index) for index in range(len(language_codes))]
    for rows, code in zip(rows_of, language_codes):
        record = langs.get(code)
        scripts[rows] = record.script
        backends[rows] = backend_of[code]
        own = record.lid_min_prob if record.lid_min_prob is not None and backend_of[code] == record.lid_backend else None
        # heliport's `und` already applies its own thresholds: its confidences are no probabilities
        default = 0.0 if backend_of[code] == "heliport" else (own if own is not None else rule.min_prob)
        min_prob[rows] = rule.thresholds.get(code, default)
    detections = langid.identify(table["text"], backends)
    share = np.full(n, np.nan)
    for rows, code in zip(rows_of, language_codes):
        share[rows] = langid.script_share(detections.counts[rows], langs.get(code).script)
    checked = language_index >= 0  # factorize gives -1 where the prompt has no language
    has_backend = backends != None  # noqa: E711
    detected, prob = detections.language, detections.probability
    right = np.zeros(n, dtype=bool)
    judged = checked & ~detections.too_short
    read = np.flatnonzero(judged & has_backend)
    right[read] = _accepts(expected[read], detected[read])

    too_short = checked & detections.too_short & (rule.on_too_short == "drop")
    wrong_script = judged & (np.nan_to_num(share, nan=0.0) < rule.min_script_share)
    wrong_language = judged & has_backend & ~right
    unsure = judged & has_backend & right & (prob < min_prob)

    reason = np.full(n, None, dtype=object)
    for mask, prefix, values in (
        (unsure, "lid_low_confidence:", detected),
        (wrong_language, "wrong_language:", detected),
        (wrong_script, "script_mismatch:", scripts),
        (too_short, "lid_too_short", None),
    ):  # applied in reverse priority: later assignments win; strings built for failing rows only
        rows = np.flatnonzero(mask)
        reason[rows] = [prefix + str(v) for v in values[rows]] if values is not None else prefix
    failed = reason != None  # noqa: E711
    columns = {
        "lid_lang": pa.array(detected, pa.string()),
        "lid_prob": pa.array(prob, pa.float64()),
        "lid_backend": pa.array(backends, pa.string()),
        "lid_script_share": pa.array(share, pa.float64(), mask=np.isnan(share)),
        "lid_too_short": pa.array(detections.too_short, pa.bool_()),
    }
    return pa.array(failed, pa.bool_()), pa.array(reason, pa.string()), columns
