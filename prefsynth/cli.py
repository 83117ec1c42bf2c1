"""The `prefsynth` command: a thin layer over the Python API.

Every failure ends in one paragraph on stderr that says what went wrong and what to do, with a
non-zero exit: 1 for a failed command, 2 for a bad config or usage, 130 when interrupted (Ctrl-C
or SIGTERM). `--debug` (anywhere on the line) shows the full Python traceback instead; `--verbose`
also shows the model workers' own output, which otherwise goes only to RUN/logs/.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from prefsynth.config import ConfigError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Build multilingual preference datasets.",
                  pretty_exceptions_enable=False)
fixtures_app = typer.Typer(no_args_is_help=True, help="Offline toy models for demos and tests.")
app.add_typer(fixtures_app, name="fixtures")
console = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() else 150)  # logs and pipes get every table column whole


def _load(config: Path, kind=None):
    """The Pipeline (or `kind`, e.g. Evaluation) of a YAML file; a bad config exits 2 with every problem."""
    from prefsynth.pipeline import Pipeline

    try:
        return (kind or Pipeline).from_yaml(config)
    except ConfigError as error:
        print(str(error), file=sys.stderr)
        raise typer.Exit(2)


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks (also after a command)."),
             verbose: bool = typer.Option(False, "--verbose", help="Show the model workers' own output (vLLM, "
                                          "torch) as well as writing it to RUN/logs/.")) -> None:
    """Build multilingual preference datasets."""


@app.command()
def validate(config: Path = typer.Argument(..., help="Pipeline YAML file.")) -> None:
    """Check a pipeline config (fields, model paths, languages) and read its sources, as build
    would, without loading any model."""
    from prefsynth.prompts import read_sources

    pipeline = _load(config)
    cfg = pipeline.config
    prompts, rejects, warnings = read_sources(cfg.sources)  # a source problem is the same error build gives
    pipeline.check_languages(prompts["language"])  # a language no installed backend can check
    reasons = rejects.column("reason").to_pylist()
    rejected = ", ".join(f"{r}: {reasons.count(r)}" for r in sorted(set(reasons)))
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    out.print(
        f"{config}: ok — {len(cfg.sources)} source(s) with {prompts.num_rows} prompt(s)"
        + (f" ({rejected} rejected)" if rejected else "")
        + f", {len(cfg.generators)} generator(s), {len(cfg.judges)} judge(s), {len(cfg.filters)} filter(s), "
        f"selector {cfg.selector.method}", markup=False, highlight=False,
    )


@app.command()
def build(
    config: Path = typer.Argument(..., help="Pipeline YAML file."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Run directory (default: runs/<name>)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Use only the first N prompts."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    executor: Optional[str] = typer.Option(
        None, "--executor", help="local or ray (default: the config's executor section, else local)."),
    ray_address: Optional[str] = typer.Option(
        None, "--ray-address", help="With --executor ray: auto (a running cluster only), ray://HOST:10001, or local. Unset: Ray's convention (RAY_ADDRESS, the cluster `ray start` recorded, else a local one)."),
    output: Optional[str] = typer.Option(
        None, "--output", help="Also write the dataset to this fsspec URL (s3://..., hf://datasets/..., a folder)."),
) -> None:
    """Build (or resume) a preference dataset. Rerunning the same command skips finished shards."""
    pipeline = _load(config)
    run_dir = run_dir or Path("runs") / pipeline.config.name
    pipeline.config = pipeline.config.model_copy(update={"executor": _executor(pipeline.config.executor, executor, ray_address)})
    _interrupted_note[0] = f"finished shards are kept in {run_dir}; rerun the same command to resume"
    result = pipeline.run(run_dir, limit=limit, progress=not quiet, output=output)
    print_summary(result)


@app.command("eval")
def eval_command(
    config: Path = typer.Argument(..., help="Eval YAML file (models, baseline, judge, sources)."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Run directory (default: runs/<name>)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Use only the first N prompts."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    executor: Optional[str] = typer.Option(
        None, "--executor", help="local or ray (default: the config's executor section, else local)."),
    ray_address: Optional[str] = typer.Option(
        None, "--ray-address", help="With --executor ray: auto (a running cluster only), ray://HOST:10001, or local. Unset: Ray's convention (RAY_ADDRESS, the cluster `ray start` recorded, else a local one)."),
) -> None:
    """Per-language win-rates of every model against the baseline (resumable like a build):
    RUN/eval/summary.json, RUN/eval/judgments.parquet and RUN/report/eval.html."""
    from prefsynth.eval.run import Evaluation

    evaluation = _load(config, Evaluation)
    run_dir = run_dir or Path("runs") / evaluation.config.name
    evaluation.config = evaluation.config.model_copy(update={"executor": _executor(evaluation.config.executor, executor, ray_address)})
    _interrupted_note[0] = f"finished shards are kept in {run_dir}; rerun the same command to resume"
    result = evaluation.run(run_dir, limit=limit, progress=not quiet)
    print_eval_summary(result)


@app.command("iterate")
def iterate_command(
    config: Path = typer.Argument(..., help="Iterate YAML file (build, rounds, train, ...)."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Root of the round folders (default: runs/<name>)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    executor: Optional[str] = typer.Option(
        None, "--executor", help="local or ray, for every round's build (default: the build config's executor)."),
    ray_address: Optional[str] = typer.Option(
        None, "--ray-address", help="With --executor ray: auto (a running cluster only), ray://HOST:10001, or local. Unset: Ray's convention (RAY_ADDRESS, the cluster `ray start` recorded, else a local one)."),
) -> None:
    """On-policy rounds: build with the current policy, train on the round's pairs, repeat.
    Rerunning the same command resumes; raising `rounds` computes only the new rounds."""
    from prefsynth.iteration import IterateError, iterate, load

    try:
        cfg = load(config)
    except ConfigError as error:
        print(str(error), file=sys.stderr)
        raise typer.Exit(2)
    root = run_dir or Path("runs") / cfg.name
    chosen = _executor(cfg.pipeline.executor, executor, ray_address) if (executor or ray_address) else None
    _interrupted_note[0] = f"finished rounds, shards and checkpoints are kept in {root}; rerun the same command to resume"
    try:
        result = iterate(cfg, root, executor=chosen, progress=not quiet)
    except IterateError as error:
        print(f"error: {error}", file=sys.stderr)
        raise typer.Exit(1)
    print_iterate_summary(result)


def print_iterate_summary(result) -> None:
    table = Table(title=f"{result.summary['name']}: {len(result.rounds)} round(s) in {result.root}")
    for column in ("round", "policy", "pairs", "reward mean", "win-rate", "train loss"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for r in result.rounds:
        loss = r.get("train_loss_last")
        table.add_row(str(r["round"]), r["policy"], str(r["pairs"]), f"{r['reward_mean']:.3f}",
                      _percent(r.get("win_rate")), "-" if loss is None else f"{loss:.4f}")
    out.print(table)
    frame = result.table()
    if not frame.empty:
        wide = frame.pivot(index="language", columns="round", values="reward_mean")
        languages = Table(title="reward mean per language and round")
        languages.add_column("language")
        for index in wide.columns:
            languages.add_column(f"round {index}", justify="right")
        for language, row in wide.iterrows():
            languages.add_row(language, *(f"{value:.3f}" for value in row))
        out.print(languages)


def _executor(configured, executor: str | None, ray_address: str | None):
    """The executor section after --executor / --ray-address."""
    from prefsynth.config import LocalExecutor, RayExecutor

    if executor not in (None, "local", "ray"):
        print(f"error: --executor must be local or ray, not {executor!r}", file=sys.stderr)
        raise typer.Exit(2)
    if executor == "local":
        return LocalExecutor()
    if executor == "ray" or ray_address:
        chosen = configured if configured.type == "ray" else RayExecutor()
        return chosen.model_copy(update={"address": ray_address}) if ray_address else chosen
    return configured


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def print_eval_summary(result) -> None:
    summary = result.summary
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for judge in summary["judges"]:
        table = Table(title=f"prefsynth eval: win-rate % against {summary['baseline']} (judge {judge}), {result.run_dir}")
        for column in ("model", "language", "win-rate", "95% CI", "W/T/L", "n", "errors", "LC", "in-lang model/base",
                       "inconsistent"):
            table.add_column(column)
        for name, entry in summary["models"].items():
            scopes = entry["judges"][judge]
            for scope, stats in [*sorted(scopes["languages"].items()), ("overall", scopes["overall"])]:
                table.add_row(
                    name, scope, _percent(stats["win_rate"]),
                    f"{_percent(stats['ci_low'])}-{_percent(stats['ci_high'])}",
                    f"{stats['wins']}/{stats['ties']}/{stats['losses']}", str(stats["n"]), str(stats["judge_errors"]),
                    _percent(stats["lc_win_rate"]),
                    f"{_percent(stats['language_fidelity_model'])}/{_percent(stats['language_fidelity_baseline'])}",
                    _percent(stats.get("position_inconsistency")), end_section=scope == "overall")
            macro = scopes["macro"]
            table.add_row(name, f"macro ({macro['languages']})", _percent(macro["win_rate"]),
                          f"{_percent(macro['ci_low'])}-{_percent(macro['ci_high'])}", "", "", "", "", "", "",
                          end_section=True)
        out.print(table)
    if summary.get("rejects"):
        out.print("rejected: " + ", ".join(f"{k}: {v}" for k, v in summary["rejects"].items()))
    out.print(f"summary -> {result.eval_dir / 'summary.json'}, report -> {result.report}  (total {result.wall_s:.1f} s)")


def print_summary(result) -> None:
    table = Table(title=f"prefsynth build: {result.run_dir}")
    for column in ("stage", "shards computed/total", "rows", "rejected (reason: count)", "wall s"):
        table.add_column(column)
    for stage in result.stages:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(stage.rejects.items())) or "-"
        computed = f"{stage.computed}/{stage.shards}" + (f" ({stage.repaired} repaired)" if stage.repaired else "")
        table.add_row(stage.name, computed, str(stage.rows), reasons, f"{stage.wall_s:.1f}")
    out.print(table)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for title, frame in (("coverage per language", result.coverage), ("judge agreement per language", result.agreement)):
        if frame is not None and len(frame) and len(frame.columns) > 2:
            languages = Table(title=title)
            for column in frame.columns:
                languages.add_column(column)
            for row in frame.itertuples(index=False):
                languages.add_row(*map(str, row))
            out.print(languages)
    if result.diversity:
        out.print("diversity (mean pairwise embedding distance per prompt): "
                  + ", ".join(f"{k}: {v:.3f}" for k, v in result.diversity.items()))
    pairs = result.pairs().num_rows
    out.print(f"{pairs} pairs -> {result.dataset_dir / 'data' / 'pairs'}  (total {result.wall_s:.1f} s)")
    if result.output:
        out.print(f"dataset also written to {result.output[-1].rsplit('/', 1)[0]} ({len(result.output)} files)")


@app.command()
def inspect(run_dir: Path = typer.Argument(..., help="Run directory."), rows: int = typer.Option(3, help="Pairs to show.")) -> None:
    """Show a run's stages, counts and a few pairs."""
    import json

    import pyarrow.parquet as pq

    _require_run_dir(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    table = Table(title=f"{manifest.get('pipeline')} ({run_dir})")
    for column in ("stage", "rows", "rejected", "wall s"):
        table.add_column(column)
    for stage in manifest.get("summary", []):
        table.add_row(stage["name"], str(stage["rows"]), str(sum(stage["rejects"].values())), f"{stage['wall_s']:.1f}")
    out.print(table)
    listwise = (run_dir / "dataset" / "data" / "lists").is_dir()
    items = pq.read_table(run_dir / "dataset" / "data" / ("lists" if listwise else "pairs")).to_pylist()[:rows]
    for item in items:
        out.print(f"[bold]{item['language']}[/bold] {item['prompt'][-1]['content']}")
        if listwise:
            for side in ("chosen", "rejected"):
                for answer, score in zip(item[side], item[f"{side}_scores"]):
                    out.print(f"  {side} ({score:.3f}): {answer[0]['content'][:160]}")
            continue
        out.print(f"  chosen ({item['chosen_score']:.3f}): {item['chosen'][0]['content'][:160]}")
        out.print(f"  rejected ({item['rejected_score']:.3f}): {item['rejected'][0]['content'][:160]}")


@app.command("train")
def train_command(
    config: Path = typer.Argument(..., help="Training config YAML (see prefsynth/train/config.py)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from output_dir/checkpoint."),
    nproc: int = typer.Option(1, "--nproc", min=1,
                              help="Processes (devices) on this machine: >1 launches torchrun with FSDP2."),
) -> None:
    """Train a policy with DPO (or IPO, SimPO, ORPO, ...) on an exported dataset."""
    from prefsynth.train import load_train_config, train

    cfg = load_train_config(config)
    if nproc > 1:
        from prefsynth.train.launch import TrainingFailed, torchrun

        try:
            torchrun(config, nproc, resume)
        except TrainingFailed as error:
            out.print(f"[red]{error}[/red]")
            raise typer.Exit(1)
        import json

        final = json.loads((Path(cfg.output_dir) / "summary.json").read_text())
        steps, last = final["steps"], final.get("final") or {}
    else:
        result = train(cfg, resume=resume)
        steps, last = result.steps, (result.metrics[-1] if result.metrics else {})
    out.print(f"{steps} steps, loss {last.get('loss', float('nan')):.4f} -> {Path(cfg.output_dir) / 'model'}")


@app.command("push")
def push_command(
    run_dir: Path = typer.Argument(..., help="Run directory (or its dataset/ folder)."),
    repo_id: str = typer.Argument(..., help="Hub dataset repository, e.g. my-org/my-dataset."),
    private: bool = typer.Option(False, "--private", help="Create the repository private."),
    revision: str = typer.Option(None, "--revision", help="Branch to commit to (created if needed)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be uploaded; upload nothing."),
) -> None:
    """Publish a build's dataset (card + Parquet) to the Hugging Face Hub in one commit."""
    from prefsynth.publish import PushError, push

    try:
        result = push(run_dir, repo_id, private=private, revision=revision, dry_run=dry_run)
    except PushError as error:
        out.print(f"[red]push failed:[/red] {error}")
        raise typer.Exit(1) from None
    for name in result.files:
        out.print(f"  {name}")
    verb = "would upload" if dry_run else "uploaded"
    out.print(f"{verb} {len(result.files)} files to {repo_id}@{result.revision}"
              + (f": {result.commit_url}" if result.commit_url else ""))


@app.command("report")
def report_command(run_dir: Path = typer.Argument(..., help="Run directory.")) -> None:
    """Write RUN/report/index.html: per-language funnel, score distributions, margins, length bias,
    language-ID confusion, judge agreement, diversity (self-contained, opens offline); for an eval
    run, RUN/report/eval.html; for an iterate root, ROOT/report/rounds.html (per-round curves)."""
    from prefsynth.report.html import write_report

    if _is_iterate_root(run_dir):
        from prefsynth.report.rounds_html import write_rounds_report

        out.print(f"report -> {write_rounds_report(run_dir)}")
        return
    _require_run_dir(run_dir)
    if (run_dir / "eval" / "summary.json").is_file():
        from prefsynth.report.eval_html import write_eval_report

        out.print(f"report -> {write_eval_report(run_dir)}")
        return
    out.print(f"report -> {write_report(run_dir)}")


@app.command()
def langs() -> None:
    """List the language registry, with each language's language-ID check and its measured accuracy."""
    from prefsynth import langs as registry

    table = Table(title="prefsynth languages (language ID measured on 20 held-out sentences each)")
    for column in ("code", "name", "native", "script", "FLORES-200", "LID backend", "kept", "through en/rel",
                   "group", "XLM-R", "dir", "resource"):
        table.add_column(column)
    for lang in registry.load().values():
        figures = registry.measured(lang.code, lang.lid_backend) if lang.lid_backend else None
        kept = f"{figures['kept']:.0%}" if figures else "-"
        through = (f"{figures['english_through']:.0%}/{figures['relative_through']:.0%} ({figures['relative']})"
                   if figures and figures.get("relative") else f"{figures['english_through']:.0%}" if figures else "-")
        table.add_row(lang.code, lang.name, lang.native_name, lang.script, lang.flores200, lang.lid_backend or "none",
                      kept, through, "+".join([lang.code, *lang.lid_group]) if lang.lid_group else "",
                      "yes" if lang.xlmr else "no", lang.direction, lang.resource_level)
    out.print(table)


@app.command()
def doctor(config: Optional[Path] = typer.Argument(None, help="A pipeline YAML to check as well (models, languages, disk, Ray).")) -> None:
    """Check this environment (and a CONFIG) before a long build: one row per check, with the fix
    for each failure. Exits 1 when a check a build needs fails."""
    from prefsynth import doctor as checks_mod

    checks = checks_mod.run(config)
    table = Table(title="prefsynth doctor" + (f": {config}" if config else ""))
    for column in ("check", "status", "detail", "fix"):
        table.add_column(column, overflow="fold")
    styles = {checks_mod.OK: "green", checks_mod.WARN: "yellow", checks_mod.FAIL: "bold red"}
    for check in checks:
        table.add_row(check.name, f"[{styles[check.status]}]{check.status}[/]", check.detail, check.fix)
    out.print(table)
    failed = checks_mod.failed(checks)
    if failed:
        print(f"{len(failed)} check(s) a build needs failed: {', '.join(c.name for c in failed)}", file=sys.stderr)
        raise typer.Exit(1)


@app.command("config-reference")
def config_reference(
    update: Optional[Path] = typer.Option(None, "--update", help="Rewrite the generated section of this README."),
) -> None:
    """Print the pipeline config reference (every option, its default and meaning) as Markdown."""
    from prefsynth.docs import config_reference_markdown, update_readme

    if update is not None:
        update_readme(update)
    else:
        print(config_reference_markdown())


@fixtures_app.command("tiny-models")
def tiny_models(
    directory: Path = typer.Argument(..., help="Where to write the fixture folders (tiny-chat/, tiny-reward/, ...)."),
    group: Optional[list[str]] = typer.Option(
        None, "--group", "-g", help="Only these groups: chat (tiny-chat, tiny-reward), mt (tiny-mt), comet "
        "(tiny-comet, tiny-comet-qe; needs .venv-comet). Default: all, skipping comet with a warning without .venv-comet."),
) -> None:
    """Build the tiny offline models (a few minutes on a CPU)."""
    from prefsynth.fixtures import FIXTURES, build_tiny_models
    from prefsynth.judges.comet import CometUnavailable

    unknown = sorted(set(group or []) - set(FIXTURES.values()))
    if unknown:
        print(f"error: unknown fixture group(s) {unknown}; groups: {sorted(set(FIXTURES.values()))}", file=sys.stderr)
        raise typer.Exit(2)
    try:
        built = build_tiny_models(directory, groups=group or None)
    except CometUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        raise typer.Exit(1)
    for name, path in built.items():
        out.print(f"{name}: {path}")


def _is_iterate_root(root: Path) -> bool:
    import json

    summary = root / "summary.json"
    return summary.is_file() and "rounds" in json.loads(summary.read_text())


def _require_run_dir(run_dir: Path) -> None:
    if not (run_dir / "manifest.json").is_file():
        print(f"error: {run_dir} is not a run directory (no manifest.json): give the --run-dir of a build",
              file=sys.stderr)
        raise typer.Exit(1)


_interrupted_note = ["work finished so far is kept"]


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that cleanup (killing model workers) runs."""


def _terminate(signum: int, frame) -> None:
    raise Terminated()


def _known_errors() -> tuple[type[BaseException], ...]:
    """Failures with a message of their own, written for the user (no traceback needed)."""
    from prefsynth.executor import ShardFailed, StageFailed
    from prefsynth.filter.language import LanguageCheckError
    from prefsynth.prompts import PromptSourceError
    from prefsynth.runs import RunDirError

    return StageFailed, ShardFailed, PromptSourceError, RunDirError, ConfigError, LanguageCheckError


def main(argv: list[str] | None = None) -> None:
    """The console entry point: runs the app, and turns every failure into one paragraph."""
    from prefsynth.executor import DEBUG_ENV, VERBOSE_ENV, describe

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if "--verbose" in args:
        os.environ[VERBOSE_ENV] = "1"  # read by the executors, which start the workers
    args = [arg for arg in args if arg not in ("--debug", "--verbose")]
    if debug:
        os.environ[DEBUG_ENV] = "1"  # model workers print their tracebacks too
    signal.signal(signal.SIGTERM, _terminate)
    # A shell starts background jobs (`prefsynth build ... &`) with SIGINT ignored, and Python keeps it
    # so: restore Ctrl-C / `kill -INT`, which stop a build cleanly and keep finished shards.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        app(args=args, prog_name="prefsynth")  # exits through SystemExit; usage errors are shown by typer
    except SystemExit as done:
        if done.code == 130:  # typer's answer to Ctrl-C
            print(f"\ninterrupted: {_interrupted_note[0]}", file=sys.stderr)
        raise
    except (KeyboardInterrupt, Terminated):
        print(f"\ninterrupted: {_interrupted_note[0]}", file=sys.stderr)
        sys.exit(130)
    except Exception as error:
        if debug:
            raise
        if isinstance(error, _known_errors()):
            print(f"error: {error}", file=sys.stderr)
        elif isinstance(error, OSError):  # the machine's answer (a missing file, permissions): not our bug
            print(f"error: {describe(error)}", file=sys.stderr)
        else:
            print(f"error: {describe(error)}. This is a bug or an unexpected environment: rerun with --debug for "
                  f"the traceback; {_interrupted_note[0]}", file=sys.stderr)
        sys.exit(2 if isinstance(error, ConfigError) else 1)

if __name__ == "__main__":
    main()
