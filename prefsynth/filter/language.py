"""The language-ID rule: is each candidate in its prompt's language, and in its script?

Checks, first failure wins: text too short to judge (`lid_too_short`), letters mostly outside
the language's script (`script_mismatch:<script>`, e.g. Hindi in Latin script), detected
language differs (`wrong_language:<code>`), detected language right but not confident
(`lid_low_confidence:<code>`). Languages lid.176 does not cover (e.g. Hausa, Zulu) get the
script check only; prompts without a language are not checked.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from prefsynth import langid, langs
from prefsynth.config import LanguageIdFilter


def language_checks(rule: LanguageIdFilter, table: pa.Table) -> tuple[pa.Array, pa.Array, dict[str, pa.Array]]:
    detections = langid.identify(table["text"])
    expected = table["language"].to_numpy(zero_copy_only=False).astype(object)
    language_index, language_codes = pd.factorize(expected)  # integer compares per language
    n = table.num_rows
    share = np.full(n, np.nan)
    min_prob = np.full(n, rule.min_prob)
    has_label = np.zeros(n, dtype=bool)
    scripts = np.empty(n, dtype=object)
    for index, code in enumerate(language_codes):
        rows = np.flatnonzero(language_index == index)
        record = langs.get(code)
        scripts[rows] = record.script
        share[rows] = langid.script_share(detections.counts[rows], record.script)
        default = record.lid_min_prob if record.lid_min_prob is not None else rule.min_prob
        min_prob[rows] = rule.thresholds.get(code, default)
        has_label[rows] = record.fasttext is not None
    checked = language_index >= 0  # factorize gives -1 where the prompt has no language
    detected, prob = detections.language, detections.probability

    too_short = checked & detections.too_short & (rule.on_too_short == "drop")
    judged = checked & ~detections.too_short
    wrong_script = judged & (np.nan_to_num(share, nan=0.0) < rule.min_script_share)
    wrong_language = judged & has_label & (detected != expected)
    unsure = judged & has_label & (detected == expected) & (prob < min_prob)

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
        "lid_script_share": pa.array(share, pa.float64(), mask=np.isnan(share)),
        "lid_too_short": pa.array(detections.too_short, pa.bool_()),
    }
    return pa.array(failed, pa.bool_()), pa.array(reason, pa.string()), columns
