"""The held-out language-ID sentences (tests/data/langid_heldout) and the backends' common interface."""
import json
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from prefsynth import langid, langs, lid_backends

REPO = Path(__file__).resolve().parent.parent
HELDOUT = REPO / "tests" / "data" / "langid_heldout"
DRAFTS = REPO / "langs" / "drafts"
# Scripts whose words are not separated by spaces: their length is counted in letters.
UNSPACED = {"zh-Hans", "zh-Hant", "ja", "th", "lo", "km", "my"}


def known_codes() -> set[str]:
    return langs.codes() | {yaml.safe_load(p.read_text(encoding="utf-8"))["code"] for p in DRAFTS.glob("*.yaml")}


def test_every_registry_and_draft_language_has_twenty_held_out_sentences():
    files = {path.stem: path for path in HELDOUT.glob("*.jsonl")}
    assert set(files) == known_codes() and len(files) >= 101
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
