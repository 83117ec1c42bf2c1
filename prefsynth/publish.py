"""Publishing a build's dataset folder to the Hugging Face Hub: one commit with the card and the
Parquet files, through huggingface_hub. The token comes from the caller, HF_TOKEN or the login
cache, and is never printed, logged or written anywhere."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

RETRY_STATUS = {429, 500, 502, 503, 504}


class PushError(RuntimeError):
    """A push that cannot succeed as asked (auth, missing dataset); the message says what to do."""


@dataclass
class PushResult:
    repo_id: str
    revision: str
    files: list[str]  # paths in the repository
    commit_url: str | None  # None for a dry run


def dataset_files(run_dir: str | Path) -> tuple[Path, list[str]]:
    """The dataset folder and the files a push uploads: the card, data/**/*.parquet and
    rejects.parquet; bookkeeping (_dataset.json, _ref_logps/, temporary folders) stays local."""
    folder = Path(run_dir)
    folder = folder / "dataset" if (folder / "dataset").is_dir() else folder
    if not (folder / "README.md").is_file() or not (folder / "data").is_dir():
        raise PushError(f"{folder} is not a built dataset (no README.md card or data/): run `prefsynth build` first")
    files = ["README.md"] + sorted(str(p.relative_to(folder)) for p in (folder / "data").rglob("*.parquet")
                                   if not any(part.startswith((".", "_")) for part in p.relative_to(folder).parts))
    if (folder / "rejects.parquet").is_file():
        files.append("rejects.parquet")
    return folder, files


def _token(token: str | None) -> str | None:
    if token:
        return token
    if os.environ.get("HF_TOKEN"):
        return os.environ["HF_TOKEN"]
    from huggingface_hub import get_token

    return get_token()


def _status(error: Exception) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def _with_retries(call, what: str, attempts: int = 5, first_wait: float = 1.0):
    from huggingface_hub.errors import HfHubHTTPError

    for attempt in range(attempts):
        try:
            return call()
        except HfHubHTTPError as error:
            status = _status(error)
            if status in (401, 403):
                raise PushError(
                    f"{what}: the Hub refused the token ({status}). Set HF_TOKEN to a token with write access to "
                    "this namespace (or run `hf auth login`), and check the repository id."
                ) from None
            if status not in RETRY_STATUS or attempt == attempts - 1:
                raise PushError(f"{what} failed with HTTP {status}: {str(error).splitlines()[0]}") from None
            time.sleep(first_wait * 2**attempt)


def push(run_dir: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
         dry_run: bool = False, token: str | None = None, endpoint: str | None = None,
         message: str | None = None) -> PushResult:
    folder, files = dataset_files(run_dir)
    branch = revision or "main"
    if dry_run:
        return PushResult(repo_id, branch, files, None)
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=endpoint, token=_token(token))
    _with_retries(lambda: api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True),
                  f"creating dataset repository {repo_id}")
    if revision:
        _with_retries(lambda: api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True),
                      f"creating branch {revision}")
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in files]
    commit = _with_retries(lambda: api.create_commit(
        repo_id, operations=operations, repo_type="dataset", revision=branch,
        commit_message=message or f"prefsynth: {len(files) - 1} dataset files and the card",
    ), f"uploading to {repo_id}")
    return PushResult(repo_id, branch, files, getattr(commit, "commit_url", None))
