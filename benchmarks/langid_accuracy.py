"""Per-language accuracy of every installed language-ID backend on the held-out sentences, through
the real `language_id` filter, and the choice of backend per language.

    .venv/bin/python benchmarks/langid_accuracy.py [--json OUT.json] [--write]

Reads `tests/data/langid_heldout/<code>.jsonl` (20 natural sentences per language, written for
this check) and, for every backend installed (prefsynth.lid_backends), runs the filter with that
backend for every language it has a label for, at its defaults (min_prob 0.5, script checks, the
record's `lid_group`). Per language:
- kept: share of the language's own sentences the filter keeps;
- through (English): share of English sentences it keeps under a prompt in the language;
- through (relative): share of the closest registry relative's sentences it keeps (outside the
  language's `lid_group`: inside it they pass by design, reported as `group_through`).
The issue-19 bar is kept >= 95% and through <= 5%. The choice per language: among the default
backends (lid176, cld3, cld2: installed with prefsynth, permissive licences) that meet the bar, the
best kept minus through, ties to the faster (that order); else the best of the opt-in extras that
meets it; else the best default (the language is then weak: `prefsynth langs` and the card say so).
`--write` stores the figures in langs/lid-accuracy.json and the choice in each record's `lid_backend`.
"""
from __future__ import annotations

import argparse
import datetime
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parent.parent
HELDOUT = REPO / "tests" / "data" / "langid_heldout"
BAR_KEPT, BAR_THROUGH = 0.95, 0.05

# The registry language a wrong-language answer is most likely to be confused with (outside the
# language's lid_group: ms and id are checked as a group, so Javanese stands in for their relative).
CLOSEST = {
    "ms": "jv", "id": "jv", "ne": "hi", "hi": "mr", "mr": "hi", "uz": "tr", "tr": "az", "az": "tr", "hr": "sl",
    "bs": "sl", "sr": "mk", "mk": "bg", "bg": "mk", "be": "ru", "uk": "ru", "ru": "uk", "kk": "ky", "ky": "kk",
    "tg": "ru", "mn": "ru", "da": "nb", "nb": "da", "sv": "nb", "is": "da", "gl": "pt", "pt": "gl", "es": "ca",
    "ca": "es", "it": "es", "fr": "ca", "ht": "fr", "eu": "es", "eo": "es", "mt": "it", "sq": "it", "cs": "sk",
    "sk": "cs", "sl": "hr", "pl": "cs", "af": "nl", "nl": "af", "lb": "de", "de": "lb", "en": "nl", "ro": "it",
    "et": "fi", "fi": "et", "lv": "lt", "lt": "lv", "hu": "fi", "ga": "gd", "gd": "ga", "cy": "ga", "el": "en",
    "zu": "xh", "xh": "zu", "st": "zu", "sn": "ny", "ny": "sn", "ig": "yo", "yo": "ig", "ha": "yo", "sw": "so",
    "so": "sw", "rw": "sw", "mg": "id", "am": "en", "jv": "su", "su": "jv", "ceb": "fil", "fil": "ceb",
    "mi": "sm", "sm": "mi", "vi": "en", "th": "lo", "lo": "th", "km": "th", "my": "th", "zh-Hans": "zh-Hant",
    "zh-Hant": "zh-Hans", "ja": "zh-Hans", "ko": "ja", "bn": "as", "as": "bn", "or": "bn", "pa": "hi",
    "gu": "hi", "ta": "ml", "ml": "ta", "te": "kn", "kn": "te", "si": "ta", "ar": "fa", "fa": "ar", "ps": "fa",
    "ur": "sd", "sd": "ur", "he": "yi", "yi": "he", "hy": "ka", "ka": "hy", "ku": "fa",
}


def sentences() -> dict[str, list[str]]:
    return {path.stem: [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line]
            for path in sorted(HELDOUT.glob("*.jsonl"))}


def measure(backend: str, texts: dict[str, list[str]], rule_options: dict | None = None) -> dict[str, dict]:
    """The filter's figures per language for `backend` (None entries: no label)."""
    from prefsynth import langs, lid_backends
    from prefsynth.config import LanguageIdFilter
    from prefsynth.filter.language import language_checks

    registry = langs.load()
    codes = [c for c in registry if c in texts and lid_backends.record_label(registry[c], backend) is not None]
    rows, expected, owner = [], [], []
    for code in codes:
        record = registry[code]
        for source in dict.fromkeys([code, "en", CLOSEST.get(code), *record.lid_group]):
            if source not in texts:
                continue
            rows += texts[source]
            expected += [code] * len(texts[source])
            owner += [source] * len(texts[source])
    rule = LanguageIdFilter(type="language_id", backends={code: backend for code in codes}, **(rule_options or {}))
    table = pa.table({"text": pa.array(rows, pa.string()), "language": pa.array(expected, pa.string())})
    failed, reason, columns = language_checks(rule, table)
    kept = ~failed.to_numpy(zero_copy_only=False)
    expected, owner = np.array(expected, dtype=object), np.array(owner, dtype=object)
    reasons = np.array(reason.to_pylist(), dtype=object)
    results: dict[str, dict] = {code: None for code in registry if code not in codes}
    for code in codes:
        mine = expected == code
        own, english = mine & (owner == code), mine & (owner == "en") & (code != "en")
        relative = CLOSEST.get(code) if CLOSEST.get(code) in texts else None
        entry = {"label": lid_backends.record_label(registry[code], backend), "kept": float(kept[own].mean()),
                 "rejected_as": sorted({str(r) for r in reasons[own & ~kept]}),
                 "english_through": float(kept[english].mean()) if english.any() else 0.0,
                 "relative": relative,
                 "relative_through": float(kept[mine & (owner == relative)].mean()) if relative else 0.0}
        group = [g for g in registry[code].lid_group if g in texts]
        if group:
            entry["group_through"] = {g: float(kept[mine & (owner == g)].mean()) for g in group}
        results[code] = entry
    return results


def meets_bar(entry: dict | None) -> bool:
    return entry is not None and entry["kept"] >= BAR_KEPT and max(entry["english_through"], entry["relative_through"]) <= BAR_THROUGH


def margin(entry: dict) -> float:
    return entry["kept"] - entry["english_through"] - entry["relative_through"]


def choose(results: dict[str, dict[str, dict]], code: str) -> tuple[str | None, bool]:
    """(backend, meets the bar) for `code` by the rule in the module docstring."""
    from prefsynth.lid_backends import DEFAULT_BACKENDS

    def best(names):
        scored = [(margin(results[b][code]), -i, b) for i, b in enumerate(names) if results[b].get(code)]
        return max(scored)[2] if scored else None

    defaults = [b for b in DEFAULT_BACKENDS if b in results]
    extras = [b for b in results if b not in DEFAULT_BACKENDS]
    for pool in (defaults, extras):
        passing = [b for b in pool if meets_bar(results[b].get(code))]
        if passing:
            return best(passing), True
    return best(defaults) or best(extras), False


def write_choices(results: dict[str, dict[str, dict]], choices: dict[str, tuple[str | None, bool]]) -> None:
    from prefsynth import langs

    for code, (backend, _) in choices.items():
        path = langs.registry_dir() / f"{code}.yaml"
        text = path.read_text(encoding="utf-8")
        line = f"lid_backend: {backend if backend else 'null'}"
        if re.search(r"(?m)^lid_backend:.*$", text):
            text = re.sub(r"(?m)^lid_backend:.*$", line, text)
        else:
            text = re.sub(r"(?m)^(fasttext:.*)$", lambda m: m.group(1) + "\n" + line, text, count=1)
        path.write_text(text, encoding="utf-8")
    from prefsynth import lid_backends

    document = {
        "measured": datetime.date.today().isoformat(),
        "command": "benchmarks/langid_accuracy.py --write",
        "bar": {"kept": BAR_KEPT, "through": BAR_THROUGH},
        "versions": lid_backends.versions(),
        "chosen": {code: {"backend": backend, "meets_bar": ok} for code, (backend, ok) in sorted(choices.items())},
        "backends": results,
    }
    (langs.registry_dir() / "lid-accuracy.json").write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")


def markdown(results: dict, choices: dict, codes: list[str]) -> str:
    from prefsynth import langs

    backends = list(results)
    lines = ["| code | relative | group | " + " | ".join(f"{b} kept | en / rel through" for b in backends) + " | chosen |",
             "|---|---|---|" + "---|---|" * len(backends) + "---|"]
    for code in codes:
        cells = []
        for backend in backends:
            entry = results[backend][code]
            cells += ["—", ""] if entry is None else [f"{entry['kept']:.0%}",
                                                      f"{entry['english_through']:.0%} / {entry['relative_through']:.0%}"]
        relative = CLOSEST.get(code, "")
        group = "+".join([code, *langs.get(code).lid_group]) if langs.get(code).lid_group else ""
        chosen, ok = choices[code]
        lines.append(f"| {code} | {relative} | {group} | " + " | ".join(cells) + f" | {chosen}{'' if ok else ' (below)'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--write", action="store_true", help="store the figures and each record's lid_backend")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown (BENCHMARKS.md)")
    args = parser.parse_args()

    from prefsynth import langs, lid_backends

    texts = sentences()
    codes = [code for code in langs.load() if code in texts]
    missing = sorted(set(langs.codes()) - set(texts))
    results = {backend: measure(backend, texts) for backend in lid_backends.installed()}
    choices = {code: choose(results, code) for code in codes}
    backends = list(results)
    print(f"held-out sentences: {sum(len(texts[c]) for c in codes)} in {len(codes)} languages; "
          f"without a held-out file: {missing}")
    print(f"{'code':<9}" + "".join(f"{b + ' kept':>15}{'en/rel through':>16}" for b in backends) + "  chosen")
    for code in codes:
        row = f"{code:<9}"
        for backend in backends:
            entry = results[backend][code]
            if entry is None:
                row += f"{'no label':>15}{'':>16}"
                continue
            row += f"{entry['kept']:>15.0%}{entry['english_through']:>9.0%}/{entry['relative_through']:.0%}".ljust(31)
        chosen, ok = choices[code]
        print(row + f"  {chosen}{'' if ok else ' (below the bar)'}")
    if args.markdown:
        print(markdown(results, choices, codes))
    weak = sorted(code for code, (_, ok) in choices.items() if not ok)
    print(f"meet the bar with their chosen backend: {len(codes) - len(weak)}/{len(codes)}; below: {weak}")
    if args.json:
        args.json.write_text(json.dumps({"backends": results, "chosen": choices}, indent=1, sort_keys=True))
    if args.write:
        write_choices(results, choices)


if __name__ == "__main__":
    main()
