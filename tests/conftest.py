import contextlib
import io
import logging
import os
import shutil
import warnings
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "pipelines" / "demo.yaml"

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# There is no model hub here: fail fast instead of retrying the network (tests that need the
# online behaviour unset it).
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, Path]:
    """The fixture models, built on first use into the user cache (as the demo does)."""
    from prefsynth.fixtures import ensure_fixture

    return {name: ensure_fixture(name) for name in ("tiny-chat", "tiny-reward")}


# What the session's demo build (from Python, as a notebook would run it) left on its caller:
# the terminal text it wrote and the logging / warnings state around it (tests/test_logs.py).
DEMO_BUILD_CALLER: dict = {}


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory, tiny_models) -> Path:
    """The demo pipeline as it is, built once with the local executor (read it, never change it).
    A user's own root logging handler is installed around it, and its stderr kept."""
    from prefsynth.pipeline import Pipeline

    run_dir = tmp_path_factory.mktemp("demo-build") / "run"
    root, handler, stderr = logging.getLogger(), _ListHandler(), io.StringIO()
    root.addHandler(handler)
    before = {"handlers": list(root.handlers), "level": root.level, "filters": list(warnings.filters)}
    try:
        with contextlib.redirect_stderr(stderr):
            Pipeline(demo_config()).run(run_dir, progress=True)
        after = {"handlers": list(root.handlers), "level": root.level, "filters": list(warnings.filters)}
        logging.getLogger("user.notebook").warning("after the build")
    finally:
        root.removeHandler(handler)
    DEMO_BUILD_CALLER.update(stderr=stderr.getvalue(), before=before, after=after, handler=handler)
    return run_dir


@pytest.fixture(scope="session")
def tiny_chat_llm(tiny_models):
    """One vLLM engine on the tiny chat model for every test that calls an engine directly."""
    from prefsynth.config import Engine
    from prefsynth.engine import make_llm
    from prefsynth.executor import _shutdown

    engine = make_llm("fixture:tiny-chat", Engine(max_model_len=512, dtype="float32"), seed=0)
    yield engine
    _shutdown(engine)  # not at interpreter exit, where its logging has lost its streams


def demo_config(**overrides) -> dict:
    """The demo pipeline as a dict, with absolute source paths, for tests to modify."""
    config = yaml.safe_load(DEMO.read_text())
    for source in config["sources"]:
        source["path"] = str((DEMO.parent / source["path"]).resolve())
    config.update(overrides)
    return config


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
    return path


@pytest.fixture
def copy_demo_prompts(tmp_path):
    target = tmp_path / "prompts.jsonl"
    shutil.copy(DEMO.parent / "data" / "demo-prompts.jsonl", target)
    return target
