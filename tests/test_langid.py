"""Language ID on real sentences: the fastText lid.176 model through prefsynth.langid."""
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from prefsynth import langid
from prefsynth.config import LanguageIdFilter
from prefsynth.filter.rules import apply_filters

DATA = Path(__file__).parent / "data"


def _load(name):
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def test_accuracy_on_every_aya_23_language():
    rows = _load("langid_sentences.jsonl")
    found = langid.detect([r["text"] for r in rows])
    by_language = defaultdict(list)
    for row, (code, prob) in zip(rows, found):
        by_language[row["language"]].append(code == row["language"])
    assert len(by_language) == 24
    for language, hits in by_language.items():
        assert len(hits) >= 20
        assert sum(hits) / len(hits) >= 0.95, f"{language}: {sum(hits)}/{len(hits)}"


def test_hard_cases_code_urls_newlines_and_short_text():
    rows = _load("langid_hard.jsonl")
    results = dict(zip(range(len(rows)), langid.detect([r["text"] for r in rows])))
    for index, row in enumerate(rows):
        code, prob = results[index]
        if row["note"] in {"code", "url", "newlines"}:
            assert code == row["language"], row
        if row["note"] == "short" and len(row["text"]) < 4:
            assert (code, prob) == ("und", 0.0), row


def test_chinese_is_split_by_script_and_cleaning_removes_code_and_urls():
    assert [c for c, _ in langid.detect(["我们这个学期学习中文，老师说我们进步很快。", "我們這個學期學習中文，老師說我們進步很快。"])] == ["zh-Hans", "zh-Hant"]
    cleaned = langid.clean(["```python\nprint('hello world')\n```\nVoir https://example.org/x?q=1 ou écrire à a@b.fr\tmerci"]).to_pylist()
    assert [" ".join(text.split()) for text in cleaned] == ["Voir ou écrire à merci"]
    assert "\n" not in cleaned[0]


def _filter(texts, languages, **options):
    table = pa.table({"text": texts, "language": languages, "score": [1.0] * len(texts)})
    return apply_filters(table, [LanguageIdFilter(type="language_id", **options)], "score").to_pylist()


def test_script_counts_decode_utf8_in_numpy():
    texts = pa.array(["abc", "", "Привет мир", "नमस्ते", "日本語とカタカナ", "한국어 ok", "😀 1 2", "mixed Ωmega"])
    counts = langid.class_counts(langid.clean(texts).slice(1))  # a sliced array has an offset
    shares = {script: langid.script_share(counts, script) for script in ("Latn", "Cyrl", "Deva", "Jpan", "Kore", "Grek")}
    assert shares["Cyrl"][1] == 1.0 and shares["Deva"][2] == 1.0 and shares["Jpan"][3] == 1.0
    assert shares["Kore"][4] == 3 / 5 and shares["Latn"][4] == 2 / 5
    assert np.isnan(shares["Latn"][0]) and np.isnan(shares["Latn"][5])  # no letters at all
    assert shares["Grek"][6] == 1 / 10 and shares["Latn"][6] == 9 / 10


def test_filter_reasons_for_wrong_language_script_and_confidence():
    rows = _filter(
        ["To jest bardzo dobra odpowiedź na twoje pytanie o pogodę w Krakowie.",
         "The weather in Krakow is usually cold and rainy in November.",
         "Aasmaan neela isliye dikhta hai kyunki sooraj ki roshni bikharti hai.",
         "आसमान नीला इसलिए दिखता है क्योंकि सूरज की रोशनी बिखरती है।",
         "Merci",
         "Ina kwana, yaya aiki yau da safe a gida?",
         "Saya suka makan nasi goreng di warung dekat rumah."],
        ["pl", "pl", "hi", "hi", "fr", "ha", "id"],
    )
    assert [r["reason"] for r in rows[:6]] == [None, "wrong_language:en", "script_mismatch:Deva", None, "lid_too_short", None]
    assert rows[0]["lid_lang"] == "pl" and rows[0]["lid_prob"] > 0.5 and rows[2]["lid_script_share"] == 0.0
    assert rows[5]["keep"]  # Hausa: lid.176 has no label, the script check passes
    strict = _filter(["Saya suka makan nasi goreng di warung dekat rumah."], ["id"], thresholds={"id": 0.999})
    assert strict[0]["reason"].startswith(("lid_low_confidence:", "wrong_language:"))
    relaxed = _filter(["Merci"], ["fr"], on_too_short="keep")
    assert relaxed[0]["keep"] and relaxed[0]["lid_too_short"]


def test_per_language_threshold_override():
    text = ["Saya suka makan nasi goreng di warung dekat rumah setiap pagi sebelum bekerja."]
    (detected, prob), = langid.detect(text)
    assert detected == "id"
    rows = _filter(text, ["id"], min_prob=0.99, thresholds={"id": prob - 0.01})
    assert rows[0]["keep"], rows[0]
    with pytest.raises(ValueError, match="not in the registry"):
        LanguageIdFilter(type="language_id", thresholds={"xx": 0.2})


def test_registry_default_threshold_applies_with_the_records_own_backend(monkeypatch):
    from prefsynth import langs

    somali = langs.get("so").templates.system_prompt
    (detected, prob), = langid.detect([somali])
    assert detected == "so" and prob < 0.5  # lid.176 is unsure of Somali: auto reads it with CLD3
    assert _filter([somali], ["so"])[0]["keep"] and _filter([somali], ["so"])[0]["lid_backend"] == "cld3"
    assert _filter([somali], ["so"], backend="lid176")[0]["reason"] == "lid_low_confidence:so"
    weak = langs.get("so").model_copy(update={"lid_backend": "lid176", "lid_min_prob": prob - 0.05})
    real_get = langs.get
    monkeypatch.setattr(langs, "get", lambda code: weak if code == "so" else real_get(code))
    assert _filter([somali], ["so"])[0]["keep"]  # the record's lid_min_prob applies to its own backend
    assert not _filter([somali], ["so"], backend="cld2", backends={"so": "lid176"}, thresholds={"so": 0.9})[0]["keep"]