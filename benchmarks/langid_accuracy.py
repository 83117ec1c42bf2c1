"""Per-language accuracy of every installed language-ID backend on the held-out sentences.

    .venv/bin/python benchmarks/langid_accuracy.py [--json OUT.json]

Reads `tests/data/langid_heldout/<code>.jsonl` (20 natural sentences per language, written for
this check) and, for every backend installed (prefsynth.lid_backends), reports per language:
- kept: share of the language's own sentences read as the language (a group label such as
  heliport's msa counts for each of its languages) with a score at or above the filter's bar
  (lid176, lingua: `min_prob` 0.5 or the record's `lid_min_prob`; heliport: its own thresholds);
- let through (English): share of English sentences read as the language;
- let through (relative): share of the closest registry relative's sentences read as it.
The issue-19 bar is kept >= 95% and let through <= 5%. Draft records under `langs/drafts/` are
measured too (`--drafts`, the default), as if they were in the registry.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import yaml

REPO = Path(__file__).resolve().parent.parent
HELDOUT = REPO / "tests" / "data" / "langid_heldout"

# The registry language a wrong-language answer is most likely to be confused with.
CLOSEST = {
    "ms": "id", "id": "ms", "ne": "hi", "hi": "mr", "mr": "hi", "uz": "tr", "tr": "az", "az": "tr", "hr": "bs",
    "bs": "hr", "sr": "mk", "mk": "bg", "bg": "mk", "be": "ru", "uk": "ru", "ru": "uk", "kk": "ky", "ky": "kk",
    "tg": "ru", "mn": "ru", "da": "nb", "nb": "da", "sv": "nb", "is": "da", "gl": "pt", "pt": "gl", "es": "ca",
    "ca": "es", "it": "es", "fr": "ca", "ht": "fr", "eu": "es", "eo": "es", "mt": "it", "sq": "it", "cs": "sk",
    "sk": "cs", "sl": "hr", "pl": "cs", "af": "nl", "nl": "af", "lb": "de", "de": "lb", "en": "nl", "ro": "it",
    "et": "fi", "fi": "et", "lv": "lt", "lt": "lv", "hu": "fi", "ga": "gd", "gd": "ga", "cy": "ga", "el": "en",
    "zu": "xh", "xh": "zu", "st": "zu", "sn": "ny", "ny": "sn", "ig": "yo", "yo": "ig", "ha": "yo", "sw": "so",
    "so": "sw", "rw": "sw", "mg": "id", "am": "en", "jv": "su", "su": "jv", "ceb": "fil", "fil": "ceb",
    "mi": "sm", "sm": "mi", "vi": "en", "th": "lo", "lo": "th", "km": "th", "my": "th", "zh-Hans": "zh-Hant",
    "zh-Hant": "zh-Hans", "ja": "zh-Hans", "ko": "ja", "bn": "as", "as": "bn", "or": "bn", "pa": "hi",
    "gu": "hi", "ta": "ml", "ml": "ta", "te": "kn", "kn": "te", "si": "ta", "ar": "fa", "fa": "ar", "ps": "fa",
    "ur": "sd", "sd": "ur", "he": "yi", "yi": "he", "hy": "ka", "ka": "hy",
}

def records() -> dict:
    """Registry records, then the drafts of langs/drafts as if they were in the registry."""
    from prefsynth import langs

    found = dict(langs.load())
    for path in sorted((REPO / "langs" / "drafts").glob("*.yaml")):
        record = langs.Language(**yaml.safe_load(path.read_text(encoding="utf-8")))
        found.setdefault(record.code, record)
    return found


def sentences() -> dict[str, list[str]]:
    return {path.stem: [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line]
            for path in sorted(HELDOUT.glob("*.jsonl"))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--min-prob", type=float, default=0.5)
    args = parser.parse_args()

    from prefsynth import langid, lid_backends

    registry, texts = records(), sentences()
    codes = [code for code in registry if code in texts]
    missing = sorted(set(registry) - set(texts))
    flat = [text for code in codes for text in texts[code]]
    owner = np.array([code for code in codes for _ in texts[code]], dtype=object)
    cleaned = langid.clean(pa.array(flat, pa.string()))
    counts = langid.class_counts(cleaned)
    too_short = (counts[:, 1:].sum(axis=1) + 2 * counts[:, langid._CJK_CLASSES].sum(axis=1)) < langid.MIN_LETTER_WEIGHT
    results: dict[str, dict] = {}
    for backend in lid_backends.installed():
        spec = lid_backends.BACKENDS[backend]
        label_of = {code: lid_backends.record_label(registry[code], backend) for code in codes}
        raw, scores = lid_backends.predict(backend, cleaned)
        # which registry codes each text's label stands for (zh split by script, as langid does)
        variant = langid.chinese_variant(cleaned)
        read_as = np.array([[c for c in codes if label_of[c] == label and (not c.startswith("zh-") or c == v)]
                            for label, v in zip(raw, variant)], dtype=object)
        confident = scores >= args.min_prob if spec.score == "probability" else raw != "und"
        per_language = {}
        for code in codes:
            if label_of[code] is None:
                per_language[code] = {"label": None}
                continue
            bar = registry[code].lid_min_prob or args.min_prob
            ok = confident if spec.score != "probability" else scores >= bar
            own = owner == code
            hits = np.array([code in group for group in read_as]) & ok & ~too_short
            relative = CLOSEST.get(code)
            entry = {"label": label_of[code], "kept": float(hits[own].mean()),
                     "read_as": sorted({str(x) for x in raw[own & ~hits]}),
                     "english_through": float(hits[owner == "en"].mean()) if code != "en" else None}
            if relative in texts:
                entry["relative"] = relative
                entry["relative_through"] = float(hits[owner == relative].mean())
            per_language[code] = entry
        results[backend] = per_language

    backends = list(results)
    print(f"held-out sentences: {len(flat)} in {len(codes)} languages; without a held-out file: {missing}")
    print(f"{'code':<9}" + "".join(f"{b + ' kept':>15}{'en/rel through':>16}" for b in backends))
    for code in codes:
        row = f"{code:<9}"
        for backend in backends:
            entry = results[backend][code]
            if entry["label"] is None:
                row += f"{'no label':>15}{'':>16}"
                continue
            through = f"{entry['english_through'] or 0:.0%}/{entry.get('relative_through', 0):.0%}"
            row += f"{entry['kept']:>15.0%}{through:>16}"
        print(row)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
