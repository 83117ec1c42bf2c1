"""Publishing: the dataset card, loading the dataset back, and `push` through the real
huggingface_hub client against a small Hub-compatible server on 127.0.0.1."""
import base64
import json
import logging
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from prefsynth.export.card import card_text, iso_languages, size_category
from prefsynth.publish import PushError, push

TOKEN = "hf_test_token_do_not_print_4242"


class FakeHub(BaseHTTPRequestHandler):
    """The endpoints huggingface_hub calls for create_repo, create_branch and create_commit."""

    state: dict = {}

    def log_message(self, *args):  # keep the test output clean
        pass

    def _reply(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802 (http.server's naming)
        state = self.state
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        state["calls"].append(self.path)
        state["auth"].add(self.headers.get("Authorization"))
        if self.headers.get("Authorization") != f"Bearer {state['accept']}":
            return self._reply(401, {"error": "Invalid credentials"})
        if self.path == "/api/repos/create":
            state["repo"] = json.loads(body)
            repo = state["repo"]
            return self._reply(200, {"url": f"{state['base']}/datasets/{repo.get('organization')}/{repo['name']}"})
        if self.path == "/api/validate-yaml":  # the client has the Hub check README.md's metadata
            state["validated"] = json.loads(body)["repoType"]
            return self._reply(200, {"errors": [], "warnings": []})
        if "/branch/" in self.path:
            state["branches"].append(self.path.rsplit("/branch/", 1)[1])
            return self._reply(200, {})
        if "/preupload/" in self.path:
            files = json.loads(body)["files"]
            return self._reply(200, {"files": [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in files]})
        if "/commit/" in self.path:
            if state["fail_commits"]:
                state["fail_commits"] -= 1
                return self._reply(503, {"error": "busy, try again"})
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            state["commit_message"] = next(l["value"]["summary"] for l in lines if l["key"] == "header")
            state["revision"] = self.path.rsplit("/commit/", 1)[1]
            state["files"] = {l["value"]["path"]: base64.b64decode(l["value"]["content"])
                              for l in lines if l["key"] == "file"}
            return self._reply(200, {"commitUrl": f"{state['base']}/datasets/me/demo/commit/{'a' * 40}", "commitOid": "a" * 40,
                                     "pullRequestUrl": None})
        return self._reply(404, {"error": f"not served: {self.path}"})


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    FakeHub.state = {"base": base, "calls": [], "auth": set(), "accept": TOKEN, "branches": [], "fail_commits": 0}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield FakeHub.state
    server.shutdown()


@pytest.fixture
def dataset(tmp_path):
    """A built run's dataset folder, with the local bookkeeping a push must leave behind."""
    folder = tmp_path / "run" / "dataset"
    (folder / "data" / "pairs").mkdir(parents=True)
    pq.write_table(pa.table({"prompt_id": ["a", "b"], "margin": [1.0, 2.0]}),
                   folder / "data" / "pairs" / "train-00000-of-00001.parquet")
    pq.write_table(pa.table({"stage": ["select"], "reason": ["no_spread"]}), folder / "rejects.parquet")
    (folder / "README.md").write_text("---\nlicense: other\n---\n# card\n")
    (folder / "_dataset.json").write_text("{}")
    (folder / "_ref_logps").mkdir()
    pq.write_table(pa.table({"logps": [0.0]}), folder / "_ref_logps" / "key.parquet")
    return folder


def test_push_uploads_the_card_and_parquet_in_one_commit(hub, dataset, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    result = push(dataset.parent, "me/demo", private=True, revision="v1", token=TOKEN, endpoint=hub["base"],
                  message="prefsynth demo")
    assert hub["repo"]["visibility"] == "private", hub["repo"]  # huggingface_hub 2: visibility, not private
    assert hub["repo"]["type"] == "dataset" and hub["repo"]["name"] == "demo" and hub["repo"]["organization"] == "me"
    assert hub["branches"] == ["v1"] and hub["revision"] == "v1" and hub["commit_message"] == "prefsynth demo"
    expected = ["README.md", "data/pairs/train-00000-of-00001.parquet", "rejects.parquet"]
    assert sorted(hub["files"]) == sorted(expected) == sorted(result.files)
    for name, content in hub["files"].items():
        assert content == (dataset / name).read_bytes(), name  # byte for byte
    assert hub["auth"] == {f"Bearer {TOKEN}"} and hub["validated"] == "dataset"
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err + caplog.text
    assert sum("/commit/" in call for call in hub["calls"]) == 1


def test_push_retries_busy_hub_and_explains_refused_tokens(hub, dataset, monkeypatch, capsys):
    import prefsynth.publish as publish

    monkeypatch.setattr(publish.time, "sleep", lambda seconds: None)
    hub["fail_commits"] = 2  # two 503s, then success
    push(dataset, "me/demo", token=TOKEN, endpoint=hub["base"])
    assert sum("/commit/" in call for call in hub["calls"]) == 3 and "README.md" in hub["files"]
    hub["accept"] = "another-token"
    with pytest.raises(PushError, match="HF_TOKEN") as error:
        push(dataset, "me/demo", token=TOKEN, endpoint=hub["base"])
    assert "401" in str(error.value) and TOKEN not in str(error.value)
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # from the environment when not given
    hub["accept"] = TOKEN
    push(dataset, "me/other", endpoint=hub["base"])
    assert hub["repo"]["name"] == "other"
    assert TOKEN not in "".join(capsys.readouterr())


def test_push_dry_run_lists_files_and_refuses_unbuilt_folders(dataset, tmp_path):
    shown = subprocess.run([sys.executable, "-m", "prefsynth.cli", "push", str(dataset.parent), "me/demo", "--dry-run"],
                           capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "data/pairs/train-00000-of-00001.parquet" in shown.stdout and "_ref_logps" not in shown.stdout
    assert "would upload 3 files" in shown.stdout
    with pytest.raises(PushError, match="prefsynth build"):
        push(tmp_path, "me/demo", dry_run=True)


def test_card_front_matter_and_tables():
    config = {
        "name": "demo", "generators": [{"name": "g", "model": "org/gen", "n": 4, "temperature": 1.0}],
        "judges": [{"type": "reward_model", "name": "rm", "model": "org/rm"}],
        "selector": {"method": "mu_sigma", "rejected_k": -2.0, "score": "rm_score_raw"},
    }
    coverage = pd.DataFrame({"language": ["en", "zh-Hans", "und"], "prompts_in": [3, 2, 1], "candidates": [12, 8, 4],
                             "lid_rejected": [1, 0, 0], "pairs": [3, 2, 0]})
    text = card_text(config, coverage, "pairs", 5, pd.Series({"en": 1.25, "zh-Hans": 0.5}), "cc-by-4.0")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["language"] == ["en", "zh"] and front["license"] == "cc-by-4.0"
    assert front["size_categories"] == ["n<1K"] and front["configs"][0]["config_name"] == "pairs"
    assert "arXiv:2502.16825" in text and "| en | 3 | 12 | 1 | 3 | 1.250 |" in text and "| und | 1 | 4 | 0 | 0 | - |" in text
    assert yaml.safe_load(text.split("```yaml\n")[1].split("```")[0])["selector"]["method"] == "mu_sigma"
    assert size_category(999) == "n<1K" and size_category(1000) == "1K<n<10K" and iso_languages(["pt-BR", "pt"]) == ["pt"]


def test_card_names_the_languages_whose_language_check_is_weak():
    config = {
        "name": "demo", "generators": [{"name": "g", "model": "org/gen", "n": 4, "temperature": 1.0}], "judges": [],
        "selector": {"method": "best_worst", "score": "rm_score_raw"},
        "filters": [{"type": "language_id", "script_only": ["ha"], "backends": {"sw": "lid176"}}],
    }
    coverage = pd.DataFrame({"language": ["ha", "ms", "sw", "de", "und"], "prompts_in": [1] * 5, "candidates": [4] * 5,
                             "lid_rejected": [0] * 5, "pairs": [1] * 5})
    text = card_text(config, coverage, "pairs", 5, pd.Series(dtype=float), "cc-by-4.0")
    limits = text.split("## Known limitations")[1].split("##")[0]
    assert "ha (Hausa): script check only" in limits
    assert "ms (Malay): checked as a group with id (Indonesian)" in limits
    assert "sw (Swahili): lid176 keeps 40% of held-out Swahili sentences" in limits and "choice is cld3" in limits
    assert "de (German)" not in limits  # lid176 meets the bar on German


def test_write_output_copies_the_dataset_to_fsspec_urls_and_drops_stale_files(dataset, tmp_path):
    import fsspec

    from prefsynth.export.output import write_output

    memory = fsspec.filesystem("memory")
    written = write_output(dataset, "memory://exports/demo")
    assert [path.rsplit("/demo/", 1)[1] for path in written] == [
        "data/pairs/train-00000-of-00001.parquet", "rejects.parquet", "README.md"]  # the card last
    for relative in ("README.md", "rejects.parquet", "data/pairs/train-00000-of-00001.parquet"):
        assert memory.cat(f"memory://exports/demo/{relative}") == (dataset / relative).read_bytes()
    assert not memory.exists("memory://exports/demo/_dataset.json")
    assert not memory.exists("memory://exports/demo/_ref_logps")

    # A rebuilt export has new file names (they carry the export hash): the old file must go.
    (dataset / "data" / "pairs" / "train-00000-of-00001.parquet").rename(
        dataset / "data" / "pairs" / "train-00000-of-00001-abcd1234.parquet")
    write_output(dataset, "memory://exports/demo")
    assert sorted(p.rsplit("/", 1)[1] for p in memory.find("memory://exports/demo/data")) == [
        "train-00000-of-00001-abcd1234.parquet"]
    folder = tmp_path / "copy"
    write_output(dataset.parent, str(folder))  # a plain local path works the same way
    assert pq.read_table(folder / "data" / "pairs").num_rows == 2 and (folder / "README.md").is_file()
