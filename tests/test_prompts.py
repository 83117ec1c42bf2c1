import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, strategies as st

from prefsynth.config import Source
from prefsynth.prompts import PromptSourceError, load_prompts
from prefsynth.prompts.normalize import prompt_id


def _jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows))
    return path


def test_jsonl_with_column_mapping_language_and_system(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [
        {"q": "Bonjour, comment faire du thé ?", "lang": "fr", "uid": 7},
        {"q": "How do I boil an egg?", "uid": "b"},
    ])
    source = Source(path=str(path), columns={"prompt": "q", "language": "lang", "id": "uid"}, language="en",
                    system_prompt="Be brief.")
    prompts, rejects = load_prompts([source])
    rows = prompts.to_pylist()
    assert [r["language"] for r in rows] == ["fr", "en"]
    assert rows[0]["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Bonjour, comment faire du thé ?"}]
    assert [r["source_id"] for r in rows] == ["7", "b"]
    assert [r["source_row"] for r in rows] == [0, 1]
    assert rejects.num_rows == 0


def test_chat_messages_column_as_list_or_json_string(tmp_path):
    messages = [{"role": "system", "content": "Réponds en français."}, {"role": "user", "content": "Salut !"}]
    path = _jsonl(tmp_path / "m.jsonl", [{"conv": messages, "language": "fr"}, {"conv": json.dumps(messages[1:]), "language": "fr"}])
    prompts, _ = load_prompts([Source(path=str(path), columns={"messages": "conv"}, system_prompt="ignored when present")])
    rows = prompts.to_pylist()
    assert rows[0]["messages"] == messages
    assert rows[1]["messages"][0] == {"role": "system", "content": "ignored when present"}


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_parquet_and_csv(tmp_path, fmt):
    table = pa.table({"text": ["Wie koche ich Tee?", "Что такое фотосинтез?"], "language": ["de", "ru"]})
    path = tmp_path / f"p.{fmt}"
    if fmt == "parquet":
        pq.write_table(table, path)
    else:
        table.to_pandas().to_csv(path, index=False)
    prompts, _ = load_prompts([Source(path=str(path), columns={"prompt": "text"})])
    assert prompts.column("language").to_pylist() == ["de", "ru"]
    assert prompts.column("messages").to_pylist()[1] == [{"role": "user", "content": "Что такое фотосинтез?"}]


def test_hugging_face_datasets_saved_and_data_folder(tmp_path):
    import datasets

    data = datasets.Dataset.from_dict({"instruction": ["¿Por qué el cielo es azul?", "Why is the sky blue?"], "lang": ["es", "en"]})
    data.save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "folder").mkdir()
    data.to_parquet(str(tmp_path / "folder" / "train.parquet"))
    for location in ("saved", "folder"):
        source = Source(dataset=str(tmp_path / location), columns={"prompt": "instruction", "language": "lang"})
        prompts, _ = load_prompts([source])
        assert prompts.column("language").to_pylist() == ["es", "en"], location
        assert prompts.column("source").to_pylist()[0].startswith("hf:")


def test_bad_rows_are_errors_naming_file_line_and_field(tmp_path):
    path = _jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok", "language": "en"}, '{"prompt": ', {"prompt": ""}])
    with pytest.raises(PromptSourceError) as caught:
        load_prompts([Source(path=str(path))])
    assert f"{path}: line 2: invalid JSON" in str(caught.value)
    path = _jsonl(tmp_path / "bad2.jsonl", [{"prompt": 3}])
    with pytest.raises(PromptSourceError, match=r"line 1: field 'prompt': expected a string, got int"):
        load_prompts([Source(path=str(path))])
    path = _jsonl(tmp_path / "bad3.jsonl", [{"text": "x"}])
    with pytest.raises(PromptSourceError, match=r"line 1: column 'prompt' is missing"):
        load_prompts([Source(path=str(path))])


def test_skip_records_every_bad_row_with_reason(tmp_path):
    path = _jsonl(tmp_path / "mixed.jsonl", [
        {"prompt": "Good one", "language": "en"},
        "not json",
        {"prompt": "   "},
        {"prompt": "Hola", "language": "xx"},
        {"prompt": ["list"]},
        {"messages": [{"role": "assistant", "content": "hi"}]},
        {"prompt": "Good one", "language": "en"},
        {"prompt": "Good  one ", "language": "en"},
    ])
    source = Source(path=str(path), columns={"prompt": "prompt", "messages": None}, on_bad_row="skip")
    prompts, rejects = load_prompts([source])
    assert prompts.num_rows == 1
    got = {(r["source_row"], r["reason"]) for r in rejects.to_pylist()}
    assert (1, "bad_row") in got and (2, "bad_row") in got and (3, "bad_row") in got and (4, "bad_row") in got
    assert (6, "duplicate_prompt") in got and (7, "duplicate_prompt") in got
    details = {r["source_row"]: r["detail"] for r in rejects.to_pylist()}
    assert "column 'prompt' is missing" in details[5]
    assert "empty prompt" in details[2] and "'xx' is not in the registry" in details[3]
    assert details[6] == f"same prompt as {path}: line 1"


def test_messages_validation(tmp_path):
    rows = [
        {"m": [{"role": "assistant", "content": "x"}]},
        {"m": [{"role": "user", "content": ""}]},
        {"m": [{"role": "robot", "content": "x"}]},
        {"m": "not json"},
    ]
    path = _jsonl(tmp_path / "m.jsonl", rows)
    _, rejects = load_prompts([Source(path=str(path), columns={"messages": "m"}, on_bad_row="skip")])
    details = [r["detail"] for r in rejects.to_pylist()]
    assert "last message must be from the user" in details[0]
    assert "field 'm'[0].content: empty" in details[1]
    assert "'robot' is not one of" in details[2]
    assert "not a JSON list" in details[3]


def test_limit_and_multiple_sources(tmp_path):
    a = _jsonl(tmp_path / "a.jsonl", [{"prompt": f"a{i}", "language": "en"} for i in range(5)])
    b = _jsonl(tmp_path / "b.jsonl", [{"prompt": f"b{i}", "language": "en"} for i in range(5)])
    prompts, _ = load_prompts([Source(path=str(a)), Source(path=str(b))], limit=7)
    assert [m[-1]["content"] for m in prompts.column("messages").to_pylist()] == [f"a{i}" for i in range(5)] + ["b0", "b1"]


@given(st.text(min_size=1).filter(lambda s: s.strip()), st.sampled_from(["en", "fr", None]))
def test_prompt_id_ignores_whitespace_layout_only(text, language):
    messages = [{"role": "user", "content": text}]
    spaced = [{"role": "user", "content": "  " + text.replace(" ", "   ") + "\n"}]
    assert prompt_id(language, messages) == prompt_id(language, spaced)
    assert prompt_id(language, messages) != prompt_id(language, [{"role": "user", "content": text + "!"}])
    other = "de" if language != "de" else "fr"
    assert prompt_id(language, messages) != prompt_id(other, messages)


def test_unreadable_sources_name_the_source(tmp_path):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    with pytest.raises(PromptSourceError, match=rf"{broken}: cannot read source"):
        load_prompts([Source(path=str(broken))])
    with pytest.raises(PromptSourceError, match=r"hf:no-such-org/no-such-dataset\[train\]: cannot read source"):
        load_prompts([Source(dataset="no-such-org/no-such-dataset")])
