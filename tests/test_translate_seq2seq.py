"""The seq2seq translator on the tiny NLLB-style fixture, loaded through the same transformers
classes as facebook/nllb-200-distilled-600M."""
import pytest
import torch

from prefsynth import langid
from prefsynth.fixtures.tiny_models import load_corpus
from prefsynth.fixtures.tiny_mt import train_mt_model
from prefsynth.translate.seq2seq import Seq2SeqTranslator


def demo_prompt(record_id: str) -> str:
    return next(r["prompt"] for r in load_corpus() if r["id"] == record_id)


@pytest.fixture(scope="module")
def translator(tmp_path_factory):
    # A tiny model gains nothing from intra-op threads, and on a busy 2-core machine they made
    # each generate() call ~100x slower; restore the setting for the tests that follow.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("tiny-mt")
    train_mt_model(folder, quiet=True)
    yield Seq2SeqTranslator(str(folder))
    torch.set_num_threads(threads)


def test_loads_as_nllb(translator):
    from transformers import M2M100ForConditionalGeneration, NllbTokenizer

    assert isinstance(translator.tokenizer, NllbTokenizer)
    assert isinstance(translator.model, M2M100ForConditionalGeneration)
    for code in ("eng_Latn", "fra_Latn", "jpn_Jpan", "zho_Hant"):  # FLORES-200 codes are single tokens
        assert translator.tokenizer.convert_tokens_to_ids(code) != translator.tokenizer.unk_token_id


def test_english_to_french(translator):
    (french,) = translator.translate([demo_prompt("en-01")], "eng_Latn", "fra_Latn")
    language, _ = langid.detect([french])[0]
    assert language == "fr", french


def test_batch_keeps_input_order(translator):
    texts = [demo_prompt(i) for i in ("en-03", "en-04", "en-01", "en-06", "en-02")]
    texts.insert(2, "")
    batched = translator.translate(texts, "eng_Latn", "deu_Latn", batch_size=4)
    one_by_one = [translator.translate([text], "eng_Latn", "deu_Latn")[0] for text in texts]
    assert batched == one_by_one  # greedy decoding: padding must not change the result
    assert batched[2] == ""
    assert len(set(batched)) == len(texts)


def test_unknown_language_code(translator):
    with pytest.raises(ValueError, match="xx_Latn"):
        translator.translate(["Hello"], "eng_Latn", "xx_Latn")
    with pytest.raises(ValueError, match="english"):
        translator.translate(["Hello"], "english", "fra_Latn")
    assert translator.tokenizer.convert_tokens_to_ids("a") != translator.tokenizer.unk_token_id
    with pytest.raises(ValueError, match="'a'"):  # an ordinary subword is no language code either
        translator.translate(["Hello"], "eng_Latn", "a")
