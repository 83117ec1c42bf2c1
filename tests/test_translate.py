"""Prompt translation: protected spans, provenance, and the seq2seq backend on the tiny NLLB model."""
import json

import pyarrow as pa
import pytest
from hypothesis import given, strategies as st

from prefsynth import schemas
from prefsynth.config import Translate
from prefsynth.prompts.normalize import prompt_id
from prefsynth.stages import ShardInput
from prefsynth.translate.prompts import TranslatePrompts
from prefsynth.translate.protect import LostSpan, protect, restore
from tests.conftest import REPO

words = st.text(alphabet=st.characters(blacklist_characters="`{}%$<>⟦⟧\\", blacklist_categories=("Cs",)), max_size=20)
spans = st.sampled_from(["`x = 1`", "https://example.org/a?b=1", "{name}", "%s", "%(count)d", "${HOME}", "<b>", "</b>",
                         "```python\nprint('hi')\n```", "mail@example.org", "{{ user }}"])


@given(st.lists(st.tuples(words, spans), max_size=6), words)
def test_protect_then_restore_is_identity(parts, tail):
    text = "".join(a + " " + b + " " for a, b in parts) + tail
    masked, found = protect(text)
    assert restore(masked, found) == text
    for span in found:
        assert span not in masked or span in "".join(a for a, _ in parts)


def test_a_lost_or_duplicated_span_is_an_error():
    masked, found = protect("See https://example.org and {name}.")
    assert masked == "See ⟦0⟧ and ⟦1⟧." and found == ["https://example.org", "{name}"]
    with pytest.raises(LostSpan):
        restore("Voir ⟦0⟧.", found)
    with pytest.raises(LostSpan):
        restore("Voir ⟦0⟧ ⟦0⟧ ⟦1⟧.", found)


def _english_prompts():
    rows = [json.loads(line) for line in (REPO / "pipelines" / "data" / "demo-prompts.jsonl").read_text().splitlines()]
    records = []
    for row in rows:
        if row["language"] != "en":
            continue
        messages = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": row["prompt"]}]
        pid = prompt_id("en", messages)
        records.append({"prompt_id": pid, "language": "en", "messages": messages, "source": "t", "source_row": 0,
                        "source_id": row["id"], "source_prompt_id": pid, "origin": "source"})
    return rows, schemas.from_rows(records, schemas.PROMPTS)


@pytest.fixture(scope="module")
def seq2seq_translation():
    from prefsynth.fixtures import ensure_fixture

    ensure_fixture("tiny-mt")
    config = Translate(model="fixture:tiny-mt", backend="seq2seq", source_language="en", targets=["fr", "ja"],
                       max_tokens=64, batch_size=4)
    op = TranslatePrompts(config)
    rows, prompts = _english_prompts()
    return rows, prompts, op, op.process(op.load(), ShardInput(0, prompts, None))


def test_seq2seq_translations_keep_provenance(seq2seq_translation):
    rows, prompts, _, output = seq2seq_translation
    table = output.table.to_pandas()
    assert len(table[table.origin == "source"]) == 6  # keep_source
    translated = table[table.origin == "translated"]
    native = {(r["language"], r["id"].split("-")[1]): r["prompt"] for r in rows}
    by_id = prompts.to_pandas().set_index("prompt_id")
    assert len(translated) + output.rejects.num_rows == 12
    for row in translated.itertuples():
        source = by_id.loc[row.source_prompt_id]
        topic = source.source_id.split("-")[1]
        assert row.mt == native[(row.language, topic)]  # the toy model memorised the demo prompts
        assert row.src == source.messages[-1]["content"] and row.messages[-1]["content"] == row.mt
        assert row.src_language == "en" and row.translator == "fixture:tiny-mt" and row.prompt_id.startswith("t")
        assert row.messages[0]["role"] == "system" and row.source_id == source.source_id
    assert set(translated.language) == {"fr", "ja"}


def test_translation_that_drops_a_protected_span_is_rejected(seq2seq_translation):
    _, _, op, _ = seq2seq_translation
    messages = [{"role": "user", "content": "Can you explain why the sky looks blue during the day? See https://example.org/sky"}]
    pid = prompt_id("en", messages)
    prompts = schemas.from_rows([{"prompt_id": pid, "language": "en", "messages": messages, "source_prompt_id": pid,
                                  "origin": "source"}], schemas.PROMPTS)
    output = op.process(op.load(), ShardInput(0, prompts, None))
    translated = output.table.filter(pa.compute.equal(output.table["origin"], "translated")).to_pylist()
    reasons = output.rejects.column("reason").to_pylist()
    for row in translated:  # where the model kept the sentinel, the URL came back verbatim
        assert "https://example.org/sky" in row["mt"]
    assert len(translated) + len(reasons) == 2
    assert set(reasons) <= {"translation_lost_protected_span", "translation_wrong_language", "empty_translation"}
