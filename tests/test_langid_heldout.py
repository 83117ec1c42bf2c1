"""The held-out language-ID sentences (tests/data/langid_heldout): every registry language's check,
as `backend: auto` chooses it, measured both ways through the real filter; the backends' common
interface; languages no backend can check are refused, not passed on their script."""
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from benchmarks.langid_accuracy import BAR_KEPT, BAR_THROUGH, CLOSEST, measure, sentences
from prefsynth import langid, langs, lid_backends
from prefsynth.config import LanguageIdFilter
from prefsynth.filter.language import LanguageCheckError, check_languages, language_checks

REPO = Path(__file__).resolve().parent.parent
HELDOUT = REPO / "tests" / "data" / "langid_heldout"
# Scripts whose words are not separated by spaces: their length is counted in letters.
UNSPACED = {"zh-Hans", "zh-Hant", "ja", "th", "lo", "km", "my"}


def test_every_registry_language_has_twenty_held_out_sentences():
    files = {path.stem: path for path in HELDOUT.glob("*.jsonl")}
    assert set(files) == langs.codes() and len(files) >= 101
    earlier = {json.loads(line)["text"] for name in ("langid_sentences.jsonl", "langid_hard.jsonl")
               for line in (REPO / "tests" / "data" / name).read_text(encoding="utf-8").splitlines()}
    for code, path in files.items():
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert len(rows) == 20, code
        assert all(set(row) == {"language", "topic", "text"} and row["language"] == code for row in rows), code
        assert 2 <= len({row["topic"] for row in rows}) <= 3, code
        texts = [row["text"] for row in rows]
        assert len(set(texts)) == 20 and not set(texts) & earlier, code
        if code not in UNSPACED:
            assert all(8 <= len(text.split()) <= 30 for text in texts), code
        assert not langid.identify(texts).too_short.any(), code


def test_lid176_backend_gives_fasttexts_labels_and_zh_is_a_group():
    texts = ["Wir fahren morgen früh mit dem Zug zu meiner Großmutter aufs Land.",
             "We are taking the early train to my grandmother's village tomorrow morning."]
    labels, scores = lid_backends.predict("lid176", langid.clean(pa.array(texts)))
    assert labels.tolist() == ["de", "en"] and (scores > 0.5).all()
    assert lid_backends.label_codes("lid176")["zh"] == ("zh-Hans", "zh-Hant")
    assert "lid176" in lid_backends.installed()


def test_a_backend_that_is_not_installed_names_the_install_command(monkeypatch):
    monkeypatch.setattr(lid_backends, "available", lambda name: name == "lid176")
    with pytest.raises(RuntimeError, match=r"heliport.*not installed: pip install 'prefsynth\[heliport\]'"):
        lid_backends.predict("heliport", pa.array(["x"]))


@pytest.fixture(scope="module")
def chosen_figures():
    """Every language's figures with its registry backend, measured now through the filter."""
    texts = sentences()
    by_backend = {backend: measure(backend, texts) for backend in lid_backends.DEFAULT_BACKENDS}
    return {code: by_backend[record.lid_backend][code] for code, record in langs.load().items()}


def test_every_language_meets_the_bar_with_its_chosen_backend(chosen_figures):
    below = {code: (f["kept"], f["english_through"], f["relative"], f["relative_through"], f["rejected_as"])
             for code, f in chosen_figures.items()
             if f["kept"] < BAR_KEPT or max(f["english_through"], f["relative_through"]) > BAR_THROUGH}
    assert len(chosen_figures) >= 101 and below == {}
    # every relative is another registry language, outside the language's group
    assert all(f["relative"] in langs.codes() and f["relative"] not in langs.get(c).lid_group
               for c, f in chosen_figures.items())


def test_the_stored_figures_are_the_measured_ones(chosen_figures):
    """langs/lid-accuracy.json (what `prefsynth langs` and the card show) is not stale."""
    stored = langs.lid_accuracy()
    assert {code: entry["backend"] for code, entry in stored["chosen"].items()} == \
        {code: record.lid_backend for code, record in langs.load().items()}
    for code, figures in chosen_figures.items():
        kept = langs.measured(code, langs.get(code).lid_backend)["kept"]
        assert abs(kept - figures["kept"]) <= 0.05, (code, kept, figures["kept"])


def test_auto_reads_every_language_at_once_with_its_own_backend():
    """One table mixing all languages (as a build's filter shard does): each read by its backend."""
    texts = sentences()
    codes = sorted(langs.codes())
    rows = [text for code in codes for text in texts[code]]
    expected = [code for code in codes for _ in texts[code]]
    failed, reason, columns = language_checks(LanguageIdFilter(type="language_id"),
                                              pa.table({"text": rows, "language": expected}))
    used = np.array(columns["lid_backend"].to_pylist(), dtype=object)
    assert (used == np.array([langs.get(code).lid_backend for code in expected], dtype=object)).all()
    kept = ~failed.to_numpy(zero_copy_only=False)
    owner = np.array(expected, dtype=object)
    assert {code: kept[owner == code].mean() for code in codes if kept[owner == code].mean() < BAR_KEPT} == {}


def test_a_group_check_accepts_its_relatives_and_nothing_else():
    texts = sentences()
    rule = LanguageIdFilter(type="language_id")
    table = pa.table({"text": texts["id"] + texts["en"] + texts["jv"], "language": ["ms"] * 60})
    failed, _, _ = language_checks(rule, table)
    kept = ~failed.to_numpy(zero_copy_only=False)
    assert kept[:20].mean() >= BAR_KEPT  # Indonesian passes as Malay: the documented group (ms+id)
    assert kept[20:].mean() <= BAR_THROUGH  # English and Javanese do not
    assert CLOSEST["ms"] == "jv" and langs.get("ms").lid_group == ["id"]


def test_a_language_the_backend_cannot_read_is_refused_unless_script_only():
    hausa = sentences()["ha"][:5]
    english = sentences()["en"][:5]
    with pytest.raises(LanguageCheckError, match=r"lid176 has no label for ha \(Hausa\).*auto.*cld3.*script_only: \[ha\]"):
        check_languages(LanguageIdFilter(type="language_id", backend="lid176"), ["ha", "de"])
    # script only: the user's explicit choice; English (Latin script) under a Hausa prompt then passes
    rule = LanguageIdFilter(type="language_id", backend="lid176", script_only=["ha"])
    failed, _, columns = language_checks(rule, pa.table({"text": hausa + english, "language": ["ha"] * 10}))
    assert not failed.to_numpy(zero_copy_only=False).any() and set(columns["lid_backend"].to_pylist()) == {None}
    # auto reads Hausa with CLD3, which keeps the Hausa and stops the English
    failed, reason, _ = language_checks(LanguageIdFilter(type="language_id"),
                                        pa.table({"text": hausa + english, "language": ["ha"] * 10}))
    assert failed.to_pylist() == [False] * 5 + [True] * 5 and set(reason.to_pylist()[5:]) == {"wrong_language:en"}


def test_a_chosen_backend_that_is_not_installed_names_what_to_install(monkeypatch):
    monkeypatch.setattr(lid_backends, "available", lambda name: name == "lid176")
    with pytest.raises(LanguageCheckError) as refused:
        check_languages(LanguageIdFilter(type="language_id"), ["ha", "sw", "de"])
    message = str(refused.value)
    assert "ha (Hausa) is checked with cld3, which is not installed: pip install cld3-py (a prefsynth dependency)" in message
    assert "sw (Swahili)" in message and "de" not in message.replace("(", " ").split()


def test_a_build_that_cannot_check_a_language_is_refused_before_any_model_loads(tmp_path, tiny_models):
    import subprocess
    import sys

    from tests.conftest import demo_config, write_config

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"id": str(i), "language": lang, "prompt": text}) for i, (lang, text) in
                                 enumerate([("ha", "Ina kasuwa mafi kusa?"), ("de", "Wo ist der nächste Markt?")])))
    config = demo_config()
    config["sources"] = [{"path": str(prompts), "columns": {"prompt": "prompt", "language": "language", "id": "id"}}]
    config["filters"] = [{"type": "language_id", "backend": "lid176"}]
    path = write_config(tmp_path / "refused.yaml", config)
    cli = [sys.executable, "-m", "prefsynth.cli"]
    checked = subprocess.run(cli + ["validate", str(path)], capture_output=True, text=True)
    built = subprocess.run(cli + ["build", str(path), "--run-dir", str(tmp_path / "run"), "--quiet"],
                           capture_output=True, text=True)
    for refused in (checked, built):
        assert refused.returncode != 0 and "backend lid176 has no label for ha (Hausa)" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
    assert not (tmp_path / "run" / "generate.tiny-chat").exists()  # refused before generation
    config["filters"][0]["script_only"] = ["ha"]
    write_config(path, config)
    assert subprocess.run(cli + ["validate", str(path)], capture_output=True, text=True).returncode == 0


def test_label_mapping_per_backend_in_one_place():
    get = langs.get
    assert [lid_backends.record_label(get(c), "cld3") for c in ("he", "nb", "zh-Hant", "fil")] == ["iw", "no", "zh", "fil"]
    assert [lid_backends.record_label(get(c), "cld2") for c in ("he", "jv", "fil", "zh-Hant", "rw")] == \
        ["iw", "jw", "tl", "zh-Hant", "rw"]
    assert lid_backends.record_label(get("rw"), "cld3") is None and lid_backends.record_label(get("ha"), "lid176") is None
    assert lid_backends.label_codes("cld3")["zh"] == ("zh-Hans", "zh-Hant")  # split by script afterwards
    assert [code for code, _ in langid.detect(["我們這個學期學習中文，老師說我們進步很快。"], "cld3")] == ["zh-Hant"]
    if lid_backends.available("heliport"):
        assert lid_backends.label_codes("heliport")["msa"] == ("id", "ms")  # a macro-language: a group label
        assert langid.detect(["Saya suka makan nasi goreng di warung dekat rumah setiap pagi."], "heliport")[0][0] == "id|ms"
