"""`Pipeline`: plan the stages of a config, run them with resume, and return the dataset.

The CLI is a thin layer over this. Stage folders in the run directory:
prompts -> generate.<name> (one per generator) -> judge.<name> (chained) -> filter -> select -> export,
then dataset/ is written from export's shards.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from prefsynth import config as config_mod
from prefsynth import schemas
from prefsynth.config import LIST_METHODS, PipelineConfig
from prefsynth.executor import PROMPTS_STAGE, StagePlan, engine_groups, make_executor
from prefsynth.export.card import write_card
from prefsynth.export.output import write_output
from prefsynth.export.pairs import ExportPairs, write_dataset
from prefsynth.filter.rules import FilterCandidates
from prefsynth.generate.translated import TranslateCompletions
from prefsynth.generate.vllm_generate import Generate
from prefsynth.judges.calibrate import Calibrate
from prefsynth.judges.embedding import EmbedCandidates
from prefsynth.judges.comet_stage import CometCandidateScore, TranslationQualityScore
from prefsynth.judges.llm import LlmJudgeScore
from prefsynth.judges.reward import RewardModelScore
from prefsynth.prompts import read_sources
from prefsynth.prompts.normalize import balance_prompts
from prefsynth.report.agreement import agreement
from prefsynth.report.coverage import coverage, strategy_diversity
from prefsynth.runs import RunDir, package_versions, stable_hash
from prefsynth.select.stage import Select
from prefsynth.translate.prompts import TranslatePrompts

SOURCE_REJECTS = "rejects-sources.parquet"


def _fingerprint(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


@dataclass
class StageSummary:
    name: str
    shards: int
    computed: int  # shards computed by this build (the rest were reused)
    rows: int
    rejects: dict[str, int]
    wall_s: float  # this build
    repaired: int = 0  # shards recomputed because they (or the upstream shards they came from) were damaged


@dataclass
class BuildResult:
    run_dir: Path
    stages: list[StageSummary] = field(default_factory=list)
    wall_s: float = 0.0
    coverage: Any = None  # pandas DataFrame, one row per language (report/coverage.py)
    diversity: dict[str, float] | None = None  # generator/strategy -> mean pairwise embedding distance
    agreement: Any = None  # pandas DataFrame, one row per language (report/agreement.py); empty without a reward model
    output: list[str] = field(default_factory=list)  # files written to the `output` URL, if any
    warnings: list[str] = field(default_factory=list)  # empty sources, shared source ids, repaired shards, ...

    @property
    def dataset_dir(self) -> Path:
        return self.run_dir / "dataset"

    @property
    def kind(self) -> str:
        """pairs, or lists for list-wise selectors (AMPO, MPO)."""
        return "lists" if (self.dataset_dir / "data" / "lists").is_dir() else "pairs"

    def pairs(self) -> pa.Table:
        """The exported rows: pairs, or lists for a list-wise selector."""
        return pq.read_table(self.dataset_dir / "data" / self.kind)

    def rejects(self) -> pa.Table:
        return pq.read_table(self.dataset_dir / "rejects.parquet")

    def to_pandas(self):
        return self.pairs().to_pandas()

    def to_dataset(self):
        import datasets

        files = sorted(str(p) for p in (self.dataset_dir / "data" / self.kind).glob("*.parquet"))
        return datasets.load_dataset("parquet", data_files={"train": files}, split="train")


class StageGraph:
    """Plans added in order; each plan's hash covers its op and everything upstream (its prompt
    set, inputs and context), so a change recomputes the stage and what follows, nothing before."""

    def __init__(self, prompts_hash: str):
        self.hashes = {PROMPTS_STAGE: prompts_hash}
        self.plans: list[StagePlan] = []
        self.prompt_set = PROMPTS_STAGE  # the stage later stages read their prompts from

    def add(self, plan: StagePlan) -> StagePlan:
        plan.prompts = self.prompt_set
        upstream = [self.hashes[plan.prompts]] + [self.hashes[n] for n in plan.inputs + list(plan.context.values())]
        plan.hash = stable_hash({"name": plan.name, "op": plan.op.spec(), "upstream": upstream})
        self.hashes[plan.name] = plan.hash
        self.plans.append(plan)
        return plan

    def add_prompt_stage(self, plan: StagePlan) -> None:
        """A stage whose output is the prompt set of every later stage (translation, decontamination)."""
        self.add(plan)
        self.prompt_set = plan.name

    def add_translation(self, translate) -> None:
        self.add_prompt_stage(StagePlan("translate", TranslatePrompts(translate), []))
        if translate.quality is not None:
            self.add_prompt_stage(StagePlan("translate_quality", TranslationQualityScore(translate.quality), []))


class Pipeline:
    """A validated pipeline config, ready to build.

    >>> pipeline = Pipeline.from_yaml("pipelines/demo.yaml")
    >>> result = pipeline.run("runs/demo")
    >>> result.to_pandas().head()
    """

    def __init__(self, config: PipelineConfig | dict, *, base_dir: str | Path | None = None):
        if isinstance(config, dict):
            config = config_mod.parse(config, base_dir=Path(base_dir) if base_dir else Path.cwd())
        self.config = config

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Pipeline":
        return cls(config_mod.load(path))

    # ------------------------------------------------------------------ planning
    def prompts_hash(self, limit: int | None) -> str:
        sources = []
        for source in self.config.sources:
            entry = source.model_dump(mode="json")
            if source.path:
                entry["content_sha256"] = _fingerprint(source.path)
            sources.append(entry)
        balance = self.config.balance.model_dump(mode="json") if self.config.balance else None
        return stable_hash({"stage": PROMPTS_STAGE, "sources": sources, "limit": limit, "shard_size": self.config.shard_size,
                            "balance": balance, "seed": self.config.seed})

    def plan(self, limit: int | None = None, prompts_hash: str | None = None) -> list[StagePlan]:
        cfg = self.config
        graph = StageGraph(prompts_hash or self.prompts_hash(limit))
        plans, add = graph.plans, graph.add
        if cfg.translate is not None:
            graph.add_translation(cfg.translate)
        generators = []
        for generator in cfg.generators:
            name = f"generate.{generator.name}"
            context = {"source_prompts": PROMPTS_STAGE} if generator.strategy == "translate_completions" else {}
            add(StagePlan(name, Generate(generator, cfg.seed), [], context))
            if generator.strategy == "translate_completions":
                add(StagePlan(f"translate_completions.{generator.name}",
                              TranslateCompletions(generator.name, generator.translator), [name]))
                name = f"translate_completions.{generator.name}"
            generators.append(name)
        previous = generators
        for judge in cfg.judges:
            op = {"llm_judge": lambda: LlmJudgeScore(judge, cfg.seed), "comet": lambda: CometCandidateScore(judge),
                  "reward_model": lambda: RewardModelScore(judge, cfg.seed),
                  "embedding": lambda: EmbedCandidates(judge)}[judge.type]()
            add(StagePlan(f"judge.{judge.name}", op, previous))
            previous = [f"judge.{judge.name}"]
        if cfg.calibration or cfg.ensemble:
            add(StagePlan("calibrate", Calibrate(cfg.calibration, cfg.ensemble), previous))
            previous = ["calibrate"]
        add(StagePlan("filter", FilterCandidates(cfg.filters, cfg.selector.score), previous))
        add(StagePlan("select", Select(cfg.selector), ["filter"]))
        add(StagePlan("export", ExportPairs(cfg.export, cfg.selector.score), ["select"], {"candidates": "filter"}))
        return plans

    # ------------------------------------------------------------------ running
    def run(self, run_dir: str | Path, *, limit: int | None = None, progress: bool = True, executor: Any = None,
            output: str | None = None) -> BuildResult:
        """Build (or resume) into `run_dir`. Finished shards are reused; a stage whose config or
        upstream changed is recomputed. `executor`: an executor object (default: the config's
        `executor:` section, closed at the end); `output`: an fsspec URL that also receives the
        dataset (default: the config's `output:`)."""
        run = RunDir(run_dir)
        with run.lock() as previous:
            notes = [] if previous is None else [
                f"took over the run directory from build PID {previous.get('pid', '?')} "
                f"(started {previous.get('started', '?')}), which ended without finishing"]
            if executor is not None:
                if getattr(executor, "in_flight", 1) is None:  # a LocalExecutor() left to the config
                    executor.in_flight = self.config.max_shards_in_flight
                return self._run(run, limit, executor, output, notes)
            executor = make_executor(self.config.executor, progress=progress,
                                     in_flight=self.config.max_shards_in_flight)
            try:
                return self._run(run, limit, executor, output, notes)
            finally:
                executor.close()

    def _run_stages(self, run: RunDir, limit: int | None, executor: Any, notes: list[str],
                    result: Any) -> tuple[list[StagePlan], set[str]]:
        """Write the manifest, repair damaged shards, then run the prompts stage and every planned
        stage with resume, appending a StageSummary per stage to `result.stages`. Returns the plans
        and the names of the stages that computed shards. Shared by build and eval."""
        prompts_hash = self.prompts_hash(limit)  # reads every source file: once per run
        plans = self.plan(limit, prompts_hash)
        run.check_format()
        run.write_manifest(
            pipeline=self.config.name,
            config=self.config.model_dump(mode="json"),
            limit=limit,
            stages={PROMPTS_STAGE: prompts_hash} | {p.name: p.hash for p in plans},
            seeds={"pipeline": self.config.seed} | {p.name: p.op.seed for p in plans if hasattr(p.op, "seed")},
            versions=package_versions(),
            executor=executor.name,
            started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        repaired = self._discard_damaged(run, plans, prompts_hash, result.warnings)
        t0 = time.perf_counter()
        computed = self._prompts(run, prompts_hash, limit)
        shards = run.stage(PROMPTS_STAGE).shards()
        prompts_stage = run.stage(PROMPTS_STAGE)
        self.check_languages(pq.ParquetDataset([prompts_stage.shard_path(i) for i in shards]).read(columns=["language"])["language"])
        result.warnings[len(notes):len(notes)] = run.stage(PROMPTS_STAGE).state().get("warnings", [])
        result.stages.append(self._summary(run, PROMPTS_STAGE, shards, len(shards) if computed else 0, time.perf_counter() - t0))
        result.stages[-1].repaired = len(repaired.get(PROMPTS_STAGE, ()))
        changed = set()
        executor.start([plan for plan in plans if not run.stage(plan.name).is_complete(plan.hash)])
        for group in engine_groups(plans):
            t0 = time.perf_counter()
            for plan in group:
                run.stage(plan.name).prepare(plan.hash, plan.op.config())
            todo = [plan for plan in group if not run.stage(plan.name).is_complete(plan.hash)]
            done = executor.run_stages(run, todo, shards) if todo else {}
            elapsed = time.perf_counter() - t0
            for plan in group:
                stage = run.stage(plan.name)
                # stages sharing one worker: each its own processing time, the first also the start-up
                seconds = elapsed if len(group) == 1 else (
                    (stage.state().get("startup_s") or 0) + (stage.state().get("worker_s") or 0) if plan.name in done else 0.0)
                stage.add_wall_time(seconds)
                stage.mark("complete", shards=len(shards))
                if done.get(plan.name):
                    changed.add(plan.name)
                result.stages.append(self._summary(run, plan.name, shards, len(done.get(plan.name, [])), seconds))
                result.stages[-1].repaired = len(repaired.get(plan.name, ()))
        return plans, changed

    def check_languages(self, prompt_languages) -> None:
        """Refuse a build whose language-ID filter cannot check one of its languages (the prompts'
        and the translation targets'), before any model loads: LanguageCheckError names them."""
        from prefsynth.filter.language import check_filters

        codes = set(pc.unique(prompt_languages).to_pylist())
        if getattr(self.config, "translate", None) is not None:
            codes |= set(self.config.translate.targets)
        # a build's filters; an eval's answer-language check (Evaluation shares this)
        rules = list(getattr(self.config, "filters", [])) + [getattr(self.config, "language_id", None)]
        check_filters([rule for rule in rules if rule is not None], codes)

    def _run(self, run: RunDir, limit: int | None, executor: Any, output: str | None, notes: list[str]) -> BuildResult:
        started = time.perf_counter()
        result = BuildResult(run.path, warnings=list(notes))
        plans, changed = self._run_stages(run, limit, executor, notes, result)
        export_changed = "export" in changed
        export = plans[-1]
        marker = {"export_hash": export.hash}
        current = run.dataset_path / "_dataset.json"
        written = json.loads(current.read_text()).get("export_hash") if current.exists() else None
        if export_changed or written != export.hash:
            rejects = sorted(p for name in [PROMPTS_STAGE] + [pl.name for pl in plans] for p in run.stage(name).rejects())
            kind = "lists" if self.config.selector.method in LIST_METHODS else "pairs"
            write_dataset(run.stage("export"), rejects, run.dataset_path, self.config.export.rows_per_file, marker, kind)
        translated = plans[0].name if self.config.translate else None
        translated = "translate_quality" if any(p.name == "translate_quality" for p in plans) else translated
        result.coverage = coverage(run, translated_stage=translated)
        write_card(run.dataset_path, self.config.model_dump(mode="json"), result.coverage, self.config.export.license)
        output = output or self.config.output
        if output:
            result.output = write_output(run.dataset_path, output)
        result.agreement = self.agreement(run)
        if self.config.report.diversity_model:
            result.diversity = strategy_diversity(run, self.config.report.diversity_model)
        result.wall_s = time.perf_counter() - started
        run.write_manifest(
            finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            summary=[s.__dict__ for s in result.stages],
            coverage=result.coverage.to_dict(orient="records"),
            diversity=result.diversity,
            agreement=result.agreement.to_dict(orient="records"),
            warnings=result.warnings,
        )
        return result

    @staticmethod
    def _discard_damaged(run: RunDir, plans: list[StagePlan], prompts_hash: str, warnings: list[str]) -> dict[str, set[int]]:
        """Check every finished shard of the stages this build would reuse against its recorded
        size and checksum. A damaged shard is deleted with every shard computed from it downstream
        (all of a stage's shards when it fits statistics over its whole input), so the build
        recomputes exactly those. Returns {stage: shards discarded}; each damaged file gets a warning.

        Every stage is checked before anything is deleted, and deletion goes downstream first: a
        build stopped in between leaves the damaged upstream file in place, to be found again,
        never a kept downstream shard whose upstream was already deleted."""
        stages = [(PROMPTS_STAGE, prompts_hash, [], False)] + [
            (plan.name, plan.hash, [plan.prompts, *plan.inputs, *plan.context.values()],
             bool(hasattr(plan.op, "fit_columns") and plan.op.fit_columns())) for plan in plans]
        discarded: dict[str, set[int]] = {}
        knock_on = 0
        for name, config_hash, upstream, whole_input in stages:
            stage = run.stage(name)
            if stage.state().get("hash") not in (config_hash, None):
                continue  # recomputed anyway; a lost state file (no hash) keeps its shards, so check them
            damaged = stage.verify_shards()
            inherited = set().union(*(discarded.get(u, set()) for u in upstream))
            bad = set(damaged) | inherited
            if inherited and whole_input:
                bad |= set(stage.shards())
            for shard, why in sorted(damaged.items()):
                warnings.append(f"{name}: damaged file recomputed ({why})")
            knock_on += len({shard for shard in bad if shard >= 0} - set(damaged))
            if bad:
                discarded[name] = bad
        for name in reversed([name for name, *_ in stages]):
            if name not in discarded:
                continue
            stage = run.stage(name)
            if name == PROMPTS_STAGE:
                if stage.state():
                    stage.record(status="running")  # the prompts stage is written whole, from the sources
            else:
                stage.discard_shards(sorted(s for s in discarded[name] if s >= 0))
            discarded[name] = {s for s in discarded[name] if s >= 0}
        if knock_on:
            warnings.append(f"{knock_on} shard(s) computed from damaged ones are recomputed with them")
        return discarded

    def agreement(self, run: RunDir):
        """Judge agreement per language: the first reward model against every other judge."""
        reward = [j.score_column for j in self.config.judges if j.type == "reward_model"]
        others = [j.score_column for j in self.config.judges if j.score_column and j.score_column not in reward[:1]]
        pairwise = tuple(j.name for j in self.config.judges if j.type == "llm_judge" and j.mode == "pairwise")
        return agreement(run, reward[0] if reward else None, others, pairwise)

    def _prompts(self, run: RunDir, prompts_hash: str, limit: int | None) -> bool:
        stage = run.stage(PROMPTS_STAGE)
        stage.prepare(prompts_hash, {"limit": limit})
        if stage.is_complete(prompts_hash):
            return False
        t0 = time.perf_counter()
        prompts, rejects, warnings = read_sources(self.config.sources, None if self.config.balance else limit)
        if self.config.balance is not None:
            prompts, over = balance_prompts(prompts, self.config.balance, self.config.seed)
            rejects = pa.concat_tables([rejects, over])
            prompts = prompts.slice(0, limit) if limit is not None else prompts
        size = self.config.shard_size
        if rejects.num_rows:
            stage.rejects_dir.mkdir(parents=True, exist_ok=True)
            stage.write_file(stage.rejects_dir / SOURCE_REJECTS, rejects)
        else:
            (stage.rejects_dir / SOURCE_REJECTS).unlink(missing_ok=True)
        for shard, start in enumerate(range(0, prompts.num_rows, size)):
            stage.write_shard(shard, prompts.slice(start, size))
        stage.add_wall_time(time.perf_counter() - t0)
        stage.mark("complete", prompts=prompts.num_rows, warnings=warnings)
        return True

    @staticmethod
    def _summary(run: RunDir, name: str, shards: list[int], computed: int, wall_s: float) -> StageSummary:
        stage = run.stage(name)
        rows = sum(pq.read_metadata(stage.shard_path(s)).num_rows for s in shards if stage.has_shard(s))
        columns = [pq.read_table(path, columns=["reason"])["reason"] for path in stage.rejects()]
        if name == "filter" and shards:
            table = pa.concat_tables(stage.read_shard(s).select(["keep", "reason"]) for s in shards)
            columns.append(table.filter(pc.invert(table["keep"]))["reason"])
        reasons: dict[str, int] = {}
        if columns:
            for item in pc.value_counts(pa.chunked_array(columns, pa.string())).to_pylist():
                reasons[item["values"]] = item["counts"]
        return StageSummary(name, len(shards), computed, rows, reasons, round(wall_s, 3))


__all__ = ["Pipeline", "BuildResult", "StageSummary", "schemas"]
