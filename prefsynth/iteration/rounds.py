"""`prefsynth iterate`: on-policy rounds made of the stages that exist, in round folders.

ROOT/round-KK/build/  a build of the config's pipeline, its first generator sampling with the
                      round's policy (round 0: the configured model; round k: round k-1's trained
                      model, whose fingerprint is part of the generate stage's hash)
ROOT/round-KK/train/  `prefsynth train` on that round's pairs (or every round's so far), starting
                      from the round's policy; its model/ is the next round's policy
ROOT/round-KK/eval/   optional: `prefsynth eval` of the trained policy against the initial one
ROOT/summary.json     one record per finished round

Every part resumes as it does on its own (finished shards, training checkpoints), so rerunning
the same command after a kill continues where it stopped, and raising `rounds` computes only the
new rounds.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from prefsynth import config as config_mod
from prefsynth.iteration.config import IterateConfig, load, parse
from prefsynth.pipeline import BuildResult, Pipeline
from prefsynth.runs import RunDir, write_json_atomic, write_parquet_atomic, write_text_atomic

POLICY = "policy"  # the round's policy in its eval
CHECKPOINT_EVERY = 50  # training steps between checkpoints unless `train` sets checkpoint_every: a kill loses less


class IterateError(RuntimeError):
    """A round cannot go on (e.g. it selected no pairs); the rounds before it are kept."""


@dataclass
class IterateResult:
    root: Path
    summary: dict

    @property
    def rounds(self) -> list[dict]:
        return self.summary["rounds"]

    def table(self):
        """One row per (round, language): reward mean and pairs, the printed per-round table."""
        import pandas as pd

        rows = [{"round": r["round"], "language": language, "reward_mean": mean,
                 "pairs": r["pairs_by_language"].get(language, 0)}
                for r in self.rounds for language, mean in sorted(r["reward_mean_by_language"].items())]
        return pd.DataFrame(rows)


def round_folder(root: Path, index: int) -> Path:
    return root / f"round-{index:02d}"


def round_prompts(cfg: IterateConfig, root: Path) -> list[Path] | None:
    """Disjoint seeded slices of the build's prompts, one Parquet file per round (None: `all`).
    The files are rewritten identically on every run, so the rounds' builds resume."""
    if cfg.prompts_per_round == "all":
        return None
    from prefsynth.prompts import read_sources
    from prefsynth.prompts.normalize import balance_prompts

    build = cfg.pipeline
    prompts, _, _ = read_sources(build.sources)
    if build.balance is not None:
        prompts, _ = balance_prompts(prompts, build.balance, build.seed)
    needed = cfg.prompts_per_round * cfg.rounds
    if prompts.num_rows < needed:
        raise IterateError(f"prompts_per_round {cfg.prompts_per_round} x {cfg.rounds} rounds needs {needed} prompts; "
                           f"the sources of {cfg.build} hold {prompts.num_rows}")
    order = np.random.default_rng(build.seed).permutation(prompts.num_rows)
    files = []
    for index in range(cfg.rounds):
        part = prompts.take(order[index * cfg.prompts_per_round:(index + 1) * cfg.prompts_per_round])
        ids = pc.if_else(pc.is_null(part["source_id"]), part["prompt_id"], part["source_id"])
        table = pa.table({"id": ids, "language": part["language"], "messages": part["messages"]})
        path = round_folder(root, index) / "prompts.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or not pq.read_table(path).equals(table):
            write_parquet_atomic(table, path)
        files.append(path)
    return files


def round_pipeline(cfg: IterateConfig, policy: str, prompts: Path | None, executor: Any) -> Pipeline:
    """The build of one round: the policy as first generator, the round's prompt slice."""
    build = cfg.pipeline
    generators = [build.generators[0].model_copy(update={"model": policy}), *build.generators[1:]]
    judges = [judge.model_copy(update={"model": policy}) if judge.name == cfg.judge_with_policy else judge
              for judge in build.judges]
    update: dict[str, Any] = {"generators": generators, "judges": judges}
    if prompts is not None:
        source = config_mod.Source(path=str(prompts), columns=config_mod.Columns(
            prompt=None, messages="messages", language="language", id="id"))
        update |= {"sources": [source], "balance": None}
    if executor is not None:
        update["executor"] = executor
    return Pipeline(build.model_copy(update=update))


def train_config(cfg: IterateConfig, root: Path, index: int, policy: str) -> dict:
    """The trainer config of round `index`: from the round's policy, on its pairs (or all so far)."""
    data: dict[str, Any] = {"checkpoint_every": CHECKPOINT_EVERY, **cfg.train, "model": policy,
                            "output_dir": str(round_folder(root, index) / "train")}
    builds = [str(round_folder(root, j) / "build") for j in range(index + 1)]
    if cfg.replay == "all" and index > 0:
        data["datasets"] = [{"path": folder} for folder in builds]
    else:
        data["dataset"] = builds[-1]
    # null ref_model: a frozen copy of the policy the round starts from, i.e. round k-1's (sDPO)
    if cfg.reference == "initial" and index > 0 and cfg.uses_reference:
        data["ref_model"] = cfg.initial_policy
    return data


def _inputs(data: dict, root: Path) -> dict:
    """What a round's training depends on: its config (paths inside ROOT written relative to it,
    so a copied or moved root keeps its finished trainings), the policy folder it starts from
    (and the reference) as fingerprints, and the exported datasets by their export hashes. A
    round whose policy or pairs changed upstream trains again though its config text is the same."""
    from prefsynth.models import fingerprint

    folders = [entry["path"] for entry in data.get("datasets") or []] or [data["dataset"]]
    exports = [_read_json(Path(folder) / "dataset" / "_dataset.json").get("export_hash") for folder in folders]
    config = json.loads(json.dumps(data).replace(json.dumps(str(root))[1:-1] + "/", "$ROOT/"))
    return {"config": config, "policy": fingerprint(data["model"]),
            "reference": fingerprint(data["ref_model"]) if data.get("ref_model") else None, "data": exports}


def run_training(cfg: IterateConfig, data: dict, root: Path, progress: bool) -> None:
    """Train (or resume) one round. Its config and inputs are kept beside its output: the same
    ones resume from the checkpoint (or skip a finished training), changed ones start over."""
    from prefsynth.train import TrainConfig, train

    out = Path(data["output_dir"])
    inputs, recorded = _inputs(data, root), _read_json(out / "inputs.json")
    same = recorded == json.loads(json.dumps(inputs))
    if same and "steps" in _read_json(out / "summary.json"):
        return  # finished
    if not same and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "inputs.json", inputs)
    config = out / "config.yaml"
    write_text_atomic(config, yaml.safe_dump(data, sort_keys=True))
    resume = (out / "checkpoint" / "state.json").is_file()
    if cfg.nproc > 1:
        from prefsynth.train.launch import torchrun

        torchrun(config, cfg.nproc, resume)
    else:
        train(TrainConfig.model_validate(data), resume=resume, progress=progress)


def run_eval(cfg: IterateConfig, folder: Path, policy: str, executor: Any, progress: bool) -> dict:
    """The round's policy against the initial one, with the eval config's prompts and judges."""
    from prefsynth.eval.run import Evaluation

    evaluation = cfg.evaluation
    baseline = next(m for m in evaluation.models if m.name == evaluation.baseline)
    models = [baseline, baseline.model_copy(update={"name": POLICY, "model": policy})]
    update: dict[str, Any] = {"models": models}
    if executor is not None:
        update["executor"] = executor
    return Evaluation(evaluation.model_copy(update=update)).run(folder, progress=progress).summary


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def round_record(cfg: IterateConfig, root: Path, index: int, policy: str, build: BuildResult,
                 eval_summary: dict | None) -> dict:
    """What a round did: pairs, the judge's mean score of everything its policy sampled (overall
    and per language; `filter` holds every scored candidate, kept or not), the win-rate against
    the initial policy, the last training loss."""
    from prefsynth.executor import PROMPTS_STAGE

    run = RunDir(build.run_dir)
    policy_name, score = cfg.pipeline.generators[0].name, cfg.pipeline.selector.score
    stage = run.stage("filter")
    candidates = pa.concat_tables([stage.read_shard(s).select(["generator", "language", score])
                                   for s in run.stage(PROMPTS_STAGE).shards() if stage.has_shard(s)])
    frame = candidates.filter(pc.equal(candidates["generator"], policy_name)).to_pandas()
    pairs = build.pairs().select(["language"]).to_pandas()
    train = _read_json(round_folder(root, index) / "train" / "summary.json")
    record = {
        "round": index,
        "policy": str(Path(policy).relative_to(root)) if Path(policy).is_relative_to(root) else policy,
        "pairs": len(pairs),
        "pairs_by_language": {str(k): int(v) for k, v in pairs["language"].value_counts().sort_index().items()},
        "candidates": int(frame[score].notna().sum()),
        "reward_mean": float(frame[score].mean()),
        "reward_mean_by_language": {str(k): float(v) for k, v in frame.groupby("language")[score].mean().items()},
        "train_loss_last": (train.get("final") or {}).get("loss"),
        "train_steps": train.get("steps"),
    }
    if eval_summary is not None:
        mine = eval_summary["models"][POLICY]
        record["win_rate"] = mine["overall"]["win_rate"]
        record["win_rate_by_language"] = {k: v["win_rate"] for k, v in sorted(mine["languages"].items())}
    return record


def _select_reasons(build: BuildResult) -> str:
    reasons: dict[str, int] = {}
    for stage in build.stages:
        if stage.name in ("filter", "select"):
            for reason, count in stage.rejects.items():
                reasons[reason] = reasons.get(reason, 0) + count
    return ", ".join(f"{reason}: {count}" for reason, count in sorted(reasons.items())) or "no rejects recorded"


def iterate(config_or_path: IterateConfig | dict | str | Path, root: str | Path, *, executor: Any = None,
            progress: bool = True) -> IterateResult:
    """Run (or resume) the rounds into `root`; see `prefsynth iterate`. `executor`: an executor
    section for every round's build and eval (prefsynth.config.RayExecutor(), ...); default: the
    build config's."""
    if isinstance(config_or_path, IterateConfig):
        cfg = config_or_path
    elif isinstance(config_or_path, dict):
        cfg = parse(config_or_path)
    else:
        cfg = load(config_or_path)
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock, Timeout

    lock = FileLock(str(root / ".iterate.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise IterateError(f"another `prefsynth iterate` is running on {root}") from None
    try:
        return _rounds(cfg, root, executor, progress)
    finally:
        lock.release()


def _rounds(cfg: IterateConfig, root: Path, executor: Any, progress: bool) -> IterateResult:
    slices = round_prompts(cfg, root)
    summary = {"name": cfg.name, "initial_policy": cfg.initial_policy, "reference": cfg.reference,
               "replay": cfg.replay, "rounds": []}
    policy = cfg.initial_policy
    for index in range(cfg.rounds):
        folder = round_folder(root, index)
        pipeline = round_pipeline(cfg, policy, slices[index] if slices else None, executor)
        build = pipeline.run(folder / "build", progress=progress)
        if build.pairs().num_rows == 0:
            raise IterateError(f"round {index} selected no pairs ({_select_reasons(build)}); rounds 0-{index - 1} "
                               f"and this round's build are kept in {root}" if index else
                               f"round 0 selected no pairs ({_select_reasons(build)}); its build is in {folder / 'build'}")
        run_training(cfg, train_config(cfg, root, index, policy), root, progress)
        trained = str(folder / "train" / "model")
        evaluated = run_eval(cfg, folder / "eval", trained, executor, progress) if cfg.evaluation is not None else None
        summary["rounds"].append(round_record(cfg, root, index, policy, build, evaluated))
        write_json_atomic(root / "summary.json", summary)
        policy = trained
    return IterateResult(root, summary)
