"""`prefsynth eval`: the build's stages and run directory, planned for an evaluation.

Stages (folders of RUN): prompts [-> translate] [-> decontaminate] -> generate.<model> (one per
model, greedy by default) -> language.<model> -> per judge: score.<judge>.<model> (reward models)
-> compare.<judge>.<model> (every model but the baseline). Each is resumable like a build's: a
killed eval reruns only missing shards, and a model added to the config generates only its own
answers. Then RUN/eval/judgments.parquet (every compare shard), RUN/eval/summary.json
(eval/stats.py) and RUN/report/eval.html.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from prefsynth import config as config_mod
from prefsynth import schemas
from prefsynth.eval import config as eval_config
from prefsynth.eval.compare import AnswerLanguageCheck, PairwiseComparison, RewardComparison
from prefsynth.eval.config import EvalConfig
from prefsynth.eval.decontaminate import DecontaminatePrompts, fingerprints
from prefsynth.eval.stats import summarize
from prefsynth.executor import PROMPTS_STAGE, StagePlan
from prefsynth.generate.vllm_generate import Generate
from prefsynth.judges.reward import RewardModelScore
from prefsynth.pipeline import Pipeline, StageGraph, StageSummary
from prefsynth.runs import RunDir, write_json_atomic, write_parquet_atomic


@dataclass
class EvalResult:
    run_dir: Path
    summary: dict
    stages: list[StageSummary] = field(default_factory=list)
    wall_s: float = 0.0
    warnings: list[str] = field(default_factory=list)
    report: Path | None = None

    @property
    def eval_dir(self) -> Path:
        return self.run_dir / "eval"

    def judgments(self) -> pa.Table:
        return pq.read_table(self.eval_dir / "judgments.parquet")

    def table(self, judge: str | None = None) -> pd.DataFrame:
        """One row per (model, language), plus `overall` and `macro`: the printed eval table."""
        return summary_frame(self.summary, judge)


def summary_frame(summary: dict, judge: str | None = None) -> pd.DataFrame:
    judge = judge or summary["judge"]
    rows = []
    for name, entry in summary["models"].items():
        scopes = entry["judges"][judge]
        for scope, stats in [*sorted(scopes["languages"].items()), ("overall", scopes["overall"]), ("macro", scopes["macro"])]:
            rows.append({"model": name, "language": scope, **{k: v for k, v in stats.items() if k != "reasons"}})
    return pd.DataFrame(rows)


class Evaluation(Pipeline):
    """A validated eval config, ready to run (the build's run directory, stages and executors).

    >>> result = Evaluation.from_yaml("pipelines/eval-demo.yaml").run("runs/eval-demo")
    >>> result.summary["models"]["sampled"]["overall"]["win_rate"]
    """

    def __init__(self, config: EvalConfig | dict, *, base_dir: str | Path | None = None):
        if isinstance(config, dict):
            config = eval_config.parse(config, base_dir=Path(base_dir) if base_dir else None)
        self.config = config

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Evaluation":
        return cls(eval_config.load(path))

    def plan(self, limit: int | None = None, prompts_hash: str | None = None) -> list[StagePlan]:
        cfg = self.config
        graph = StageGraph(prompts_hash or self.prompts_hash(limit))
        if cfg.translate is not None:
            graph.add_translation(cfg.translate)
        if cfg.decontaminate is not None:
            against = cfg.decontaminate.against
            graph.add_prompt_stage(StagePlan("decontaminate", DecontaminatePrompts(cfg.decontaminate, fingerprints(against)), []))
        # Generate stages first, then the CPU ones: models loaded the same way share one engine.
        for model in cfg.models:
            graph.add(StagePlan(f"generate.{model.name}", Generate(model, cfg.seed), []))
        for model in cfg.models:
            graph.add(StagePlan(f"language.{model.name}", AnswerLanguageCheck(cfg.language_id), [f"generate.{model.name}"]))
        base = next(m for m in cfg.models if m.name == cfg.baseline)
        for judge in cfg.judge:
            if judge.type == "reward_model":
                scorer = config_mod.RewardModelJudge.model_validate(judge.model_dump(exclude={"tie_margin"}))
                for model in cfg.models:
                    graph.add(StagePlan(f"score.{judge.name}.{model.name}", RewardModelScore(scorer, cfg.seed),
                                        [f"language.{model.name}"]))
                for model in cfg.others:
                    graph.add(StagePlan(f"compare.{judge.name}.{model.name}", RewardComparison(judge, model.name, cfg.baseline, (model.n, base.n)), [],
                                        {"model": f"score.{judge.name}.{model.name}",
                                         "baseline": f"score.{judge.name}.{cfg.baseline}"}))
            else:
                for model in cfg.others:
                    graph.add(StagePlan(f"compare.{judge.name}.{model.name}",
                                        PairwiseComparison(judge, model.name, cfg.baseline, (model.n, base.n), cfg.seed), [],
                                        {"model": f"language.{model.name}", "baseline": f"language.{cfg.baseline}"}))
        return graph.plans

    def _run(self, run: RunDir, limit: int | None, executor: Any, output: str | None, notes: list[str]) -> EvalResult:
        started = time.perf_counter()
        result = EvalResult(run.path, {}, warnings=list(notes))
        plans, _ = self._run_stages(run, limit, executor, notes, result)
        compares = [plan.name for plan in plans if plan.name.startswith("compare.")]
        shards = run.stage(PROMPTS_STAGE).shards()
        tables = [run.stage(name).read_shard(s) for name in compares for s in shards if run.stage(name).has_shard(s)]
        judgments = pa.concat_tables(tables) if tables else schemas.JUDGMENTS.empty_table()
        folder = run.path / "eval"
        folder.mkdir(exist_ok=True)
        write_parquet_atomic(judgments, folder / "judgments.parquet")
        names = [PROMPTS_STAGE] + [plan.name for plan in plans]
        rejects = [pq.read_table(p) for name in names for p in run.stage(name).rejects()]
        rejects = pa.concat_tables(rejects, promote_options="default") if rejects else schemas.rejects_table([])
        write_parquet_atomic(rejects, folder / "rejects.parquet")
        cfg = self.config
        summary = summarize(judgments.to_pandas(), baseline=cfg.baseline, models=[m.name for m in cfg.others],
                            judges=[j.name for j in cfg.judge], wrong_language=cfg.wrong_language,
                            bootstrap=cfg.bootstrap, seed=cfg.seed)
        reasons = pd.Series(rejects.column("reason").to_pylist(), dtype=object)
        summary = {"name": cfg.name, **summary, "rejects": {str(k): int(v) for k, v in reasons.value_counts().sort_index().items()},
                   "models_config": {m.name: m.model for m in cfg.models}}
        write_json_atomic(folder / "summary.json", summary)
        result.summary = summary
        from prefsynth.report.eval_html import write_eval_report

        result.report = write_eval_report(run.path)
        result.wall_s = time.perf_counter() - started
        run.write_manifest(finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           summary=[s.__dict__ for s in result.stages], warnings=result.warnings)
        return result


def evaluate(config_or_path: EvalConfig | dict | str | Path, run_dir: str | Path, *, limit: int | None = None,
             progress: bool = True, executor: Any = None) -> EvalResult:
    """Run (or resume) an evaluation into `run_dir`; see `prefsynth eval`."""
    if isinstance(config_or_path, (str, Path)):
        evaluation = Evaluation.from_yaml(config_or_path)
    else:
        evaluation = Evaluation(config_or_path)
    return evaluation.run(run_dir, limit=limit, progress=progress, executor=executor)
