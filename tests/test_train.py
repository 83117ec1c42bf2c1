"""The bundled trainer: TRL-exact first step, loss formulas, packed = unpacked log-probs, resume."""
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from prefsynth.train import TrainConfig, train
from prefsynth.train.logprobs import sequence_logps
from prefsynth.train.losses import group_contrastive_loss, pair_loss

ANSWERS = ["Sure, here it is.", "I think the answer is four.", "Bonjour, voici la réponse.", "x y z q"]


def pairs_parquet(path, n=8):
    """An exported-style pairs file (TRL conversational columns + ids)."""
    rows = []
    for i in range(n):
        prompt = [{"role": "user", "content": f"Question number {i}: what is {i} plus {i}?"}]
        rows.append({
            "prompt_id": f"p{i}", "chosen_id": f"p{i}/c", "rejected_id": f"p{i}/r", "prompt": prompt,
            "chosen": [{"role": "assistant", "content": f"{ANSWERS[i % 2]} It is {2 * i}."}],
            "rejected": [{"role": "assistant", "content": ANSWERS[2 + i % 2] * (1 + i % 3)}],
        })
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_models):
    """The tiny chat model as policy and a perturbed copy as reference (policy != reference)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("ref") / "ref"
    model = AutoModelForCausalLM.from_pretrained(tiny_models["tiny-chat"])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_models["tiny-chat"]).save_pretrained(folder)
    return {"policy": str(tiny_models["tiny-chat"]), "ref": str(folder)}


def test_first_step_matches_trl_dpo_trainer(models, tmp_path):
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    data = pairs_parquet(tmp_path / "data" / "pairs" / "train-00000-of-00001.parquet", n=6)
    settings = {"beta": 0.1, "learning_rate": 1e-3, "max_length": 48}  # 48: some sequences are truncated
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(models["policy"]),
        ref_model=AutoModelForCausalLM.from_pretrained(models["ref"]),
        args=DPOConfig(output_dir=str(tmp_path / "trl"), max_steps=1, per_device_train_batch_size=6, report_to=[],
                       logging_steps=1, save_strategy="no", use_cpu=True, bf16=False, **settings),  # fp32: DPOConfig
        # defaults to bf16 autocast, even on the CPU
        train_dataset=datasets.load_dataset("parquet", data_files=str(data), split="train"),
        processing_class=AutoTokenizer.from_pretrained(models["policy"]),
    )
    trainer.train()
    expected = trainer.state.log_history[0]
    ours = train(TrainConfig(model=models["policy"], ref_model=models["ref"], dataset=str(tmp_path / "data"),
                             batch_size=6, max_steps=1, output_dir=str(tmp_path / "ours"), **settings),
                 progress=False).metrics[0]
    for name in ("loss", "grad_norm", "rewards/chosen", "rewards/rejected", "rewards/margins",
                 "rewards/accuracies", "logps/chosen", "logps/rejected"):
        assert ours[name] == pytest.approx(expected[name], rel=1e-4, abs=1e-7), f"{name}: {ours} vs {expected}"
    assert ours["num_tokens"] == expected["num_tokens"]


def test_packed_log_probs_equal_one_sequence_at_a_time_and_full_logits(tiny_models):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_models["tiny-chat"]).eval()
    rng = np.random.default_rng(0)
    sequences = [list(rng.integers(3, 200, size=n)) for n in (9, 23, 5, 17)]
    starts = [3, 10, 1, 16]
    with torch.no_grad():
        packed = sequence_logps(model, sequences, starts, chunk=7)
        alone = torch.cat([sequence_logps(model, [s], [b], chunk=1000) for s, b in zip(sequences, starts)])
        direct = []
        for seq, start in zip(sequences, starts):
            logits = model(torch.tensor([seq])).logits[0].log_softmax(-1)
            direct.append(sum(float(logits[t - 1, seq[t]]) for t in range(start, len(seq))))
    assert torch.allclose(packed, alone, atol=1e-4)
    assert np.allclose(packed.numpy(), direct, atol=1e-4)


@pytest.mark.parametrize("kernel", ["eager", "flex_attention"])
def test_every_attention_kernel_gives_the_same_packed_log_probs(tiny_models, kernel):
    """Packed rows under each kernel (flex_attention: a document mask that skips the other
    sequences' blocks) against SDPA's block-diagonal mask, per sequence, fp32; gradients too where
    the kernel has a backward pass on this device (flex_attention has none on the CPU)."""
    from transformers import AutoModelForCausalLM

    rng = np.random.default_rng(1)
    sequences = [list(rng.integers(3, 200, size=n)) for n in (130, 7, 64, 200, 33)]
    starts = [100, 2, 10, 150, 32]
    backward = kernel != "flex_attention"
    results = {}
    for name in ("sdpa", kernel):
        model = AutoModelForCausalLM.from_pretrained(tiny_models["tiny-chat"], attn_implementation=name,
                                                     dtype=torch.float32)
        with torch.set_grad_enabled(backward):
            logps = sequence_logps(model, sequences, starts, chunk=64)
        if backward:
            logps.sum().backward()
        results[name] = (logps.detach(), model.get_input_embeddings().weight.grad)
    (reference, reference_grad), (other, other_grad) = results["sdpa"], results[kernel]
    assert torch.allclose(other, reference, rtol=1e-5, atol=1e-5), (other - reference).abs().max()
    if backward:
        relative = float((other_grad - reference_grad).norm() / reference_grad.norm())
        assert relative < 1e-5, relative


def test_every_loss_against_its_formula():
    rng = np.random.default_rng(1)
    pc, pr, rc, rr = (rng.normal(-30, 5, 6) for _ in range(4))
    lc, lr = rng.integers(5, 40, 6).astype(float), rng.integers(5, 40, 6).astype(float)
    cfg = TrainConfig(model="x/y", dataset="d", output_dir="o", beta=0.3, label_smoothing=0.1, rpo_alpha=0.7,
                      simpo_gamma=0.4, orpo_lambda=0.2)
    logsig = lambda x: -np.log1p(np.exp(-x))  # noqa: E731
    d = (pc - rc) - (pr - rr)
    avg = (pc - rc) / lc - (pr - rr) / lr
    mc, mr = pc / lc, pr / lr
    odds = (mc - mr) - (np.log1p(-np.exp(mc)) - np.log1p(-np.exp(mr)))
    expected = {
        "sigmoid": -logsig(0.3 * d), "hinge": np.maximum(0, 1 - 0.3 * d), "ipo": (avg - 1 / 0.6) ** 2,
        "robust": (-0.9 * logsig(0.3 * d) + 0.1 * logsig(-0.3 * d)) / 0.8,
        "cdpo": -0.9 * logsig(0.3 * d) - 0.1 * logsig(-0.3 * d),
        "sigmoid_nll": -logsig(0.3 * d) - 0.7 * pc / lc, "ln_dpo": -logsig(0.3 * avg),
        "simpo": -logsig(0.3 * (mc - mr) - 0.4), "orpo": -mc - 0.2 * logsig(odds),
    }
    t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    for name, value in expected.items():
        got = pair_loss(name, t(pc), t(pr), t(rc), t(rr), t(lc), t(lr), cfg).numpy()
        assert np.allclose(got, value, rtol=1e-10), name
    ratio, chosen, weight = t([1.0, -0.5, 0.2, 2.0]), torch.tensor([True, False, False, True]), t([1, 2, 1, 1])
    scaled = 0.3 * ratio.numpy() + np.log(weight.numpy())
    want = -(np.log(np.exp(scaled[[0, 3]]).sum()) - np.log(np.exp(scaled).sum()))
    assert float(group_contrastive_loss(ratio, chosen, weight, 0.3)) == pytest.approx(want)


def test_training_lowers_the_loss_and_resume_continues_the_same_curve(models, tmp_path, monkeypatch):
    import prefsynth.train.trainer as trainer

    data = pairs_parquet(tmp_path / "data" / "pairs" / "train-00000-of-00001.parquet", n=8)
    base = {"model": models["policy"], "ref_model": models["ref"], "dataset": str(data.parent.parent),
            "batch_size": 4, "max_steps": 8, "learning_rate": 5e-4, "beta": 0.1, "max_length": 64}
    whole = train(dict(base, output_dir=str(tmp_path / "whole")), progress=False).metrics
    assert whole[-1]["loss"] < whole[0]["loss"] and whole[-1]["rewards/accuracies"] >= whole[0]["rewards/accuracies"]
    assert len(list((data.parent.parent.parent / "_ref_logps").glob("*.parquet"))) == 1  # beside data/, not in it
    assert pq.read_table(data.parent).num_rows == 8  # the dataset folder still reads as the pairs alone

    saved = trainer._save_checkpoint

    def crash_after_saving(*args, **kwargs):
        saved(*args, **kwargs)
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(trainer, "_save_checkpoint", crash_after_saving)
    run = dict(base, output_dir=str(tmp_path / "resumed"), checkpoint_every=3)
    with pytest.raises(KeyboardInterrupt):
        train(run, progress=False)
    monkeypatch.setattr(trainer, "_save_checkpoint", saved)
    resumed = train(run, resume=True, progress=False)
    assert resumed.steps == 8 and [m["step"] for m in resumed.metrics] == [4, 5, 6, 7, 8]
    lines = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == list(range(1, 9))
    for a, b in zip(lines, whole):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["num_tokens"] == b["num_tokens"]
    assert (tmp_path / "resumed" / "model" / "config.json").is_file()


def test_config_rejects_what_cannot_work():
    with pytest.raises(ValueError, match="reference-free"):
        TrainConfig(model="a/b", ref_model="c/d", dataset="x", output_dir="o", loss="simpo")
    with pytest.raises(ValueError, match="multiple of gradient_accumulation"):
        TrainConfig(model="a/b", dataset="x", output_dir="o", batch_size=6, gradient_accumulation=4)
    assert math.isclose(TrainConfig(model="a/b", dataset="x", output_dir="o").beta, 0.1)


def lists_parquet(path, n=6):
    """An exported-style list-wise file (AMPO / MPO): one chosen and several rejected answers."""
    rows = []
    for i in range(n):
        answer = lambda text: [{"role": "assistant", "content": text}]  # noqa: E731
        rows.append({
            "prompt_id": f"p{i}", "prompt": [{"role": "user", "content": f"Say something about {i}."}],
            "chosen": [answer(f"{ANSWERS[0]} {i}.")], "rejected": [answer(ANSWERS[3]), answer(ANSWERS[2] + "?" * i)],
            "chosen_ids": [f"p{i}/a"], "rejected_ids": [f"p{i}/b", f"p{i}/c"],
            "weights": None if i % 2 else [1.0, 2.0, 0.5],
        })
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_group_contrastive_trains_on_lists_and_pair_losses_refuse_them(models, tmp_path):
    data = lists_parquet(tmp_path / "data" / "lists" / "train-00000-of-00001.parquet")
    base = {"model": models["policy"], "ref_model": models["ref"], "dataset": str(tmp_path / "data"), "batch_size": 3,
            "max_steps": 6, "learning_rate": 5e-4, "max_length": 64, "output_dir": str(tmp_path / "out")}
    metrics = train(dict(base, loss="group_contrastive"), progress=False).metrics
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    assert metrics[-1]["rewards/margins"] > metrics[0]["rewards/margins"]
    with pytest.raises(ValueError, match="use loss group_contrastive"):
        train(base, progress=False)


def test_lora_trains_an_adapter_only(models, tmp_path):
    from transformers import AutoModelForCausalLM

    data = pairs_parquet(tmp_path / "data" / "pairs" / "train-00000-of-00001.parquet", n=8)
    result = train({"model": models["policy"], "dataset": str(data.parent.parent), "batch_size": 4, "max_steps": 6,
                    "learning_rate": 5e-3, "max_length": 64, "lora": {"r": 4, "alpha": 8},
                    "output_dir": str(tmp_path / "lora")}, progress=False)
    assert result.metrics[-1]["loss"] < result.metrics[0]["loss"]
    saved = tmp_path / "lora" / "model"
    assert (saved / "adapter_config.json").is_file() and not (saved / "model.safetensors").exists()
    from peft import PeftModel

    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(models["policy"]), saved)
    assert any("lora_B" in name and value.abs().sum() > 0 for name, value in tuned.state_dict().items())


def test_micro_batching_does_not_change_the_step(models, tmp_path):
    """The same step packed as one forward pass, as 4 micro-batches, or by a token budget."""
    data = pairs_parquet(tmp_path / "data" / "pairs" / "train-00000-of-00001.parquet", n=8)
    base = {"model": models["policy"], "ref_model": models["ref"], "dataset": str(data.parent.parent), "batch_size": 8,
            "max_steps": 2, "learning_rate": 5e-4, "max_length": 64}
    whole = train(dict(base, output_dir=str(tmp_path / "a")), progress=False).metrics
    split = train(dict(base, gradient_accumulation=4, output_dir=str(tmp_path / "b")), progress=False).metrics
    budget = train(dict(base, micro_batch_tokens=150, output_dir=str(tmp_path / "c")), progress=False).metrics
    for other in (split, budget):
        for a, b in zip(whole, other):
            for key in ("loss", "grad_norm", "logps/chosen", "rewards/margins"):
                assert a[key] == pytest.approx(b[key], rel=1e-4), key


def trl_first_step(models, rows, tmp_path, **settings):
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(models["policy"]),
        ref_model=AutoModelForCausalLM.from_pretrained(models["ref"]),
        args=DPOConfig(output_dir=str(tmp_path / "trl"), max_steps=1, per_device_train_batch_size=len(rows), report_to=[],
                       logging_steps=1, save_strategy="no", use_cpu=True, bf16=False, **settings),
        train_dataset=datasets.Dataset.from_list(rows), processing_class=AutoTokenizer.from_pretrained(models["policy"]),
    )
    trainer.train()
    return trainer.state.log_history[0]


def trl_rows(style: str, prompt: str, n: int = 6) -> list[dict]:
    """TRL's own formats, without prefsynth's id columns: conversational or standard, explicit or
    implicit prompt."""
    rows = []
    for i in range(n):
        question, good, bad = f"Question {i}: what is {i} plus {i}?", f"{ANSWERS[i % 2]} It is {2 * i}.", ANSWERS[2 + i % 2] * (1 + i % 3)
        if style == "conversational":
            user = [{"role": "user", "content": question}]
            chosen, rejected = [{"role": "assistant", "content": good}], [{"role": "assistant", "content": bad}]
            row = {"prompt": user, "chosen": chosen, "rejected": rejected} if prompt == "explicit" else \
                {"chosen": user + chosen, "rejected": user + rejected}
        else:
            row = {"prompt": question, "chosen": " " + good, "rejected": " " + bad} if prompt == "explicit" else \
                {"chosen": f"{question} {good}", "rejected": f"{question} {bad}"}
        rows.append(row)
    return rows


@pytest.mark.parametrize("style,prompt,container", [
    ("conversational", "explicit", "parquet"), ("conversational", "implicit", "jsonl"),
    ("standard", "explicit", "save_to_disk"), ("standard", "implicit", "parquet"),
    ("conversational", "explicit", "save_to_disk"),
])
def test_trl_formats_without_ids_give_trls_first_step(models, tmp_path, style, prompt, container):
    import datasets

    rows = trl_rows(style, prompt)
    settings = {"beta": 0.1, "learning_rate": 1e-3, "max_length": 40}
    expected = trl_first_step(models, rows, tmp_path, **settings)
    if container == "parquet":
        source = tmp_path / "mine.parquet"
        pq.write_table(pa.Table.from_pylist(rows), source)
    elif container == "jsonl":
        source = tmp_path / "mine.jsonl"
        source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        source = tmp_path / "saved"
        datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(source))
    ours = train(TrainConfig(model=models["policy"], ref_model=models["ref"], dataset=str(source), batch_size=len(rows),
                             max_steps=1, output_dir=str(tmp_path / "ours"), **settings), progress=False).metrics[0]
    for name in ("loss", "grad_norm", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"):
        assert ours[name] == pytest.approx(expected[name], rel=1e-4, abs=1e-7), f"{name}: {ours} vs {expected}"
    assert ours["num_tokens"] == expected["num_tokens"]


def test_untrainable_rows_are_counted_by_reason_and_bad_types_named(models, tmp_path):
    rows = trl_rows("conversational", "explicit", n=8)
    rows[1]["chosen"] = [{"role": "assistant", "content": "  "}]
    rows[2]["rejected"] = rows[2]["chosen"]
    rows[3]["rejected"] = None
    rows[4]["prompt"] = [{"role": "user", "content": " ".join(["long"] * 200)}]
    source = tmp_path / "mixed.parquet"
    pq.write_table(pa.Table.from_pylist(rows), source)
    result = train({"model": models["policy"], "ref_model": models["ref"], "dataset": str(source), "batch_size": 2,
                    "max_steps": 1, "max_length": 64, "output_dir": str(tmp_path / "out")}, progress=False)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())["data"]
    assert summary["rows"] == 8 and summary["trained"] == 4
    assert summary["rejected"] == {"chosen identical to rejected": 1, "empty answer": 1, "missing field": 1,
                                   "prompt over max_length": 1}
    assert result.metrics[0]["data/rejected/empty answer"] == 1
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b"], "chosen": [None, 3], "rejected": [1, 2]}), bad)
    with pytest.raises(ValueError, match=r"column 'chosen' has type int64.*first bad row 1"):
        train({"model": models["policy"], "dataset": str(bad), "output_dir": str(tmp_path / "bad")}, progress=False)


def test_a_weighted_mixture_is_seeded_and_schedules_warm_up(models, tmp_path):
    from prefsynth.train.data import load_rows
    from prefsynth.train.sources import Source

    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(pa.Table.from_pylist(trl_rows("conversational", "explicit", n=6)), a)
    pq.write_table(pa.Table.from_pylist(trl_rows("conversational", "implicit", n=4)), b)
    mixture = [Source(str(a), weight=0.5), Source(str(b), weight=2.0)]
    first, _ = load_rows(mixture, seed=3)
    again, _ = load_rows(mixture, seed=3)
    assert first.num_rows == 3 + 8 and first.table.equals(again.table)
    standard = tmp_path / "s.parquet"
    pq.write_table(pa.Table.from_pylist(trl_rows("standard", "explicit")), standard)
    with pytest.raises(ValueError, match="a mixture needs one format"):
        load_rows([Source(str(a)), Source(str(standard))], seed=0)
    metrics = train({"model": models["policy"], "datasets": [{"path": str(a), "weight": 0.5}, {"path": str(b), "weight": 2.0}],
                     "batch_size": 2, "max_steps": 4, "learning_rate": 1e-3, "warmup_steps": 2,
                     "lr_scheduler_type": "cosine", "max_length": 64, "output_dir": str(tmp_path / "mix")},
                    progress=False).metrics
    assert [round(m["learning_rate"], 8) for m in metrics] == pytest.approx([0.0, 5e-4, 1e-3, 5e-4])


def test_held_out_evaluation_matches_trls_evaluate_and_splits_by_prompt(models, tmp_path):
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from prefsynth.train.data import load_rows, split_rows
    from prefsynth.train.sources import Source

    train_file = pairs_parquet(tmp_path / "train.parquet", n=6)
    held_rows = trl_rows("conversational", "explicit", n=4)  # equal batches: TRL averages its per-batch means
    held_file = tmp_path / "held.parquet"
    pq.write_table(pa.Table.from_pylist(held_rows), held_file)
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(models["policy"]),
        ref_model=AutoModelForCausalLM.from_pretrained(models["ref"]),
        args=DPOConfig(output_dir=str(tmp_path / "trl"), per_device_eval_batch_size=2, report_to=[], use_cpu=True,
                       bf16=False, max_length=40),
        train_dataset=datasets.Dataset.from_list(held_rows), eval_dataset=datasets.Dataset.from_list(held_rows),
        processing_class=AutoTokenizer.from_pretrained(models["policy"]),
    )
    expected = trainer.evaluate()
    metrics = train({"model": models["policy"], "ref_model": models["ref"], "dataset": str(train_file),
                     "eval_dataset": str(held_file), "eval_every": 2, "batch_size": 2, "max_steps": 3,
                     "learning_rate": 1e-12, "max_length": 40, "output_dir": str(tmp_path / "ours")}, progress=False).metrics
    assert [("eval_loss" in m) for m in metrics] == [False, True, True]  # every 2 steps and after the last
    for name in ("eval_loss", "eval_rewards/chosen", "eval_rewards/margins", "eval_rewards/accuracies", "eval_logps/chosen"):
        assert metrics[1][name] == pytest.approx(expected[name], rel=1e-4, abs=1e-6), name

    rows, _ = load_rows([Source(str(pairs_parquet(tmp_path / "many.parquet", n=40)))], seed=0)
    doubled = type(rows)(pa.concat_tables([rows.table, rows.table]), rows.kind, rows.conversational)  # 2 pairs per prompt
    kept, held = split_rows(doubled, 0.25, seed=1)
    assert 0 < held.num_rows < doubled.num_rows and kept.num_rows + held.num_rows == 80
    assert not set(kept.table["prompt_key"].to_pylist()) & set(held.table["prompt_key"].to_pylist())
    assert split_rows(doubled, 0.25, seed=1)[1].table.equals(held.table)
    summary = train({"model": models["policy"], "dataset": str(tmp_path / "many.parquet"), "eval_fraction": 0.25,
                     "loss": "simpo", "batch_size": 4, "max_steps": 1, "max_length": 64, "output_dir": str(tmp_path / "f")},
                    progress=False)
    assert "eval_loss" in summary.metrics[-1]
    data = json.loads((tmp_path / "f" / "summary.json").read_text())["data"]
    assert data["rows"] + data["eval"]["rows"] == 40 and data["eval"]["rows"] > 0


@pytest.mark.parametrize("reporter", ["tensorboard", "wandb"])
def test_report_to_sends_the_step_records_or_names_the_missing_package(models, tmp_path, reporter):
    import importlib.util

    data = pairs_parquet(tmp_path / "d.parquet", n=4)
    run = {"model": models["policy"], "dataset": str(data), "loss": "simpo", "batch_size": 2, "max_steps": 2,
           "max_length": 64, "report_to": [reporter], "output_dir": str(tmp_path / "out")}
    if importlib.util.find_spec(reporter) is None:
        with pytest.raises(RuntimeError, match=rf"pip install 'prefsynth\[{reporter}\]'"):
            train(run, progress=False)
        assert not (tmp_path / "out" / "metrics.jsonl").exists()  # refused before any work
        return
    if reporter != "tensorboard":
        pytest.skip(f"{reporter} is installed: its own servers are out of reach here")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    metrics = train(run, progress=False).metrics
    events = EventAccumulator(str(tmp_path / "out" / "tensorboard")).Reload()
    logged = [(e.step, e.value) for e in events.Scalars("loss")]
    assert logged == [(m["step"], pytest.approx(m["loss"], rel=1e-6)) for m in metrics]
