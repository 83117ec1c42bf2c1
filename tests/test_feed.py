"""Shards in flight against one engine (feed.py): same samples as one shard after another, the
next shard's requests queued before the current one finishes, and a failing shard that keeps the
others."""
from __future__ import annotations

import json

import pyarrow as pa
import pytest

from prefsynth import schemas
from prefsynth.config import Engine, Generator
from prefsynth.engine import generate_from_ids
from prefsynth.executor import ShardFailed, StagePlan, pending_shards, process_shards
from prefsynth.feed import EngineFeed
from prefsynth.generate.vllm_generate import Generate, chat_token_ids
from prefsynth.prompts.normalize import prompt_id
from prefsynth.runs import RunDir
from prefsynth.stages import ShardInput, ShardOutput
from tests.conftest import DEMO

SHARD_SIZE = 8


def demo_prompts() -> pa.Table:
    rows = []
    for i, line in enumerate(open(DEMO.parent / "data" / "demo-prompts.jsonl")):
        record = json.loads(line)
        messages = [{"role": "user", "content": record["prompt"]}]
        rows.append({"prompt_id": prompt_id(record["language"], messages), "language": record["language"],
                     "messages": messages, "source": "test", "source_row": i, "source_id": None})
    return schemas.from_rows(rows, schemas.PROMPTS)


def generate_op(**overrides) -> Generate:
    generator = Generator(name="feed", model="fixture:tiny-chat", n=2, temperature=1.0, max_tokens=24,
                          engine=Engine(max_model_len=512, dtype="float32"), **overrides)
    return Generate(generator, seed=0)


def prepared_run(tmp_path, op) -> tuple[RunDir, StagePlan, list[int]]:
    run, prompts = RunDir(tmp_path), demo_prompts()
    prompt_stage = run.stage("prompts")
    prompt_stage.prepare("test", {})
    shards = []
    for shard, start in enumerate(range(0, prompts.num_rows, SHARD_SIZE)):
        prompt_stage.write_shard(shard, prompts.slice(start, SHARD_SIZE))
        shards.append(shard)
    plan = StagePlan(f"generate.{op.generator.name}", op, [])
    run.stage(plan.name).prepare("test", {})
    return run, plan, shards


def outputs(run: RunDir, plan: StagePlan, shards: list[int]) -> list[list[dict]]:
    return [run.stage(plan.name).read_shard(s).select(["candidate_id", "text", "seed"]).to_pylist() for s in shards]


@pytest.fixture(scope="module")
def sequential(tmp_path_factory, tiny_chat_llm):
    """The stage one shard after another: what every in-flight count must reproduce."""
    run, plan, shards = prepared_run(tmp_path_factory.mktemp("sequential"), generate_op())
    process_shards(run, plan, shards, tiny_chat_llm, progress=False, in_flight=1)
    return outputs(run, plan, shards)


@pytest.mark.parametrize("in_flight", [2, 3])
def test_shards_in_flight_sample_what_one_shard_after_another_samples(tmp_path, tiny_chat_llm, sequential,
                                                                       monkeypatch, in_flight):
    most_waiting = []
    step = EngineFeed._step

    def counting_step(feed):
        most_waiting.append(len(feed.waiting))
        return step(feed)

    monkeypatch.setattr(EngineFeed, "_step", counting_step)
    run, plan, shards = prepared_run(tmp_path, generate_op())
    process_shards(run, plan, shards, tiny_chat_llm, progress=False, in_flight=in_flight)
    assert outputs(run, plan, shards) == sequential
    assert len(sequential) == 6 and all(len(shard) == 2 * SHARD_SIZE for shard in sequential)
    # More requests than one shard has were in the engine at once: shards overlapped.
    assert max(most_waiting) > SHARD_SIZE
    assert not tiny_chat_llm.llm_engine.has_unfinished_requests()


class FailsOnShard(Generate):
    """The generate op, failing on one shard after the others started."""

    failing = 2

    def process(self, llm, shard: ShardInput) -> ShardOutput:
        if shard.shard == self.failing:
            raise ValueError(f"shard {shard.shard} is broken")
        return super().process(llm, shard)


def test_a_failing_shard_keeps_the_shards_in_flight_and_resume_completes_the_stage(tmp_path, tiny_chat_llm,
                                                                                     sequential):
    broken = FailsOnShard(generate_op().generator, seed=0)
    run, plan, shards = prepared_run(tmp_path, broken)
    with pytest.raises(ShardFailed) as failure:
        process_shards(run, plan, shards, tiny_chat_llm, progress=False, in_flight=2)
    assert failure.value.shard == 2 and "shard 2 is broken" in str(failure.value)
    pending = pending_shards(run, plan, shards)
    # Shards 0 and 1 started before shard 2 and finished; none started after it failed.
    assert 0 not in pending and 1 not in pending and pending[0] == 2 and len(pending) >= 3
    assert not tiny_chat_llm.llm_engine.has_unfinished_requests()
    # The engine still serves, and resuming with a working op completes the stage as if it had not failed.
    process_shards(run, StagePlan(plan.name, generate_op(), []), pending, tiny_chat_llm, progress=False, in_flight=2)
    assert outputs(run, plan, shards) == sequential


def test_a_request_the_engine_rejects_fails_its_own_call_only(tiny_chat_llm):
    from vllm import SamplingParams

    feed, answers = EngineFeed(tiny_chat_llm), {}
    hello = [[{"role": "user", "content": "Hello"}]]

    def answered():
        answers["hello"] = feed.chat(hello * 3, SamplingParams(max_tokens=8, seed=1))

    def rejected():  # longer than max_model_len: vLLM refuses it when it is added
        feed.chat([[{"role": "user", "content": "word " * 2000}]], SamplingParams(max_tokens=8, seed=1))

    with pytest.raises(Exception, match="maximum context length"):
        feed.run([answered, rejected], in_flight=2)
    assert [len(out.outputs[0].token_ids) for out in answers["hello"]] == [8, 8, 8]
    assert not tiny_chat_llm.llm_engine.has_unfinished_requests()
    with pytest.raises(RuntimeError, match="engine stopped"):  # a closed feed takes no more calls
        feed.chat(hello, SamplingParams(max_tokens=8))


def test_only_generating_engines_are_fed(tiny_chat_llm):
    assert EngineFeed.over(object()) is None

    class Translator:
        def __init__(self, llm):
            self.llm = llm

    translator = Translator(tiny_chat_llm)
    feed, wrapped = EngineFeed.over(translator)
    assert wrapped.llm is feed and translator.llm is tiny_chat_llm  # the stage's own translator is unchanged
    feed, same = EngineFeed.over(tiny_chat_llm)
    assert same is feed and feed.llm_engine is tiny_chat_llm.llm_engine


def test_token_prompts_are_the_requests_chat_makes(tiny_chat_llm):
    """Ops render the chat template once, to check lengths, and send the token ids: the prompt
    tokens and the seeded samples `LLM.chat` gives, called directly and through the feed."""
    from vllm import SamplingParams

    conversations = [[{"role": "user", "content": "Hello"}],
                     [{"role": "system", "content": "Answer in one line."}, {"role": "user", "content": "¿Qué tal? 你好"},
                      {"role": "assistant", "content": "Bien."}, {"role": "user", "content": "Merci !"}]]
    params = [SamplingParams(max_tokens=12, temperature=1.0, seed=seed) for seed in (1, 2)]
    by_chat = tiny_chat_llm.chat(conversations, params, use_tqdm=False)
    ids = chat_token_ids(tiny_chat_llm.get_tokenizer(), conversations, add_generation_prompt=True)
    feed, fed = EngineFeed(tiny_chat_llm), {}
    feed.run([lambda: fed.update(outputs=generate_from_ids(feed, ids, params))], in_flight=1)
    for outputs in (generate_from_ids(tiny_chat_llm, ids, params), fed["outputs"]):
        assert [out.prompt_token_ids for out in outputs] == [out.prompt_token_ids for out in by_chat] == ids
        assert [out.outputs[0].token_ids for out in outputs] == [out.outputs[0].token_ids for out in by_chat]


def test_engine_seed_scope_is_explicit_and_recorded(tiny_chat_llm):
    """seed_scope: engine drops the per-request seeds (vLLM's price for them) and says so in every
    candidate; the default keeps earlier runs' stage hashes (the field is left out of them)."""
    from pydantic import ValidationError

    prompts = demo_prompts().slice(0, 4)
    engine_scoped = generate_op(seed_scope="engine")
    table = engine_scoped.process(tiny_chat_llm, ShardInput(0, prompts, None)).table
    assert table.num_rows == 8 and set(table["seed_scope"].to_pylist()) == {"engine"}
    assert set(table["seed"].to_pylist()) == {engine_scoped.seed}
    assert set(generate_op().process(tiny_chat_llm, ShardInput(0, prompts, None)).table["seed_scope"].to_pylist()) \
        == {"request"}
    assert "seed_scope" not in generate_op().config()["generator"]
    assert engine_scoped.config()["generator"]["seed_scope"] == "engine"
    assert Generate.from_config(engine_scoped.config()).generator.seed_scope == "engine"
    with pytest.raises(ValidationError, match="in_language only"):
        generate_op(seed_scope="engine", strategy="diverse")
