"""`prefsynth doctor`: the environment checks, and each failure it can simulate names its fix."""
import subprocess
import sys
from pathlib import Path

import pytest

from prefsynth import doctor
from tests.conftest import demo_config, write_config

REPO = Path(__file__).resolve().parent.parent


def _rows(checks):
    return {check.name: check for check in checks}


def test_this_environment_passes_and_names_what_it_found():
    rows = _rows(doctor.run())
    assert rows["vLLM"].status == "ok" and "build" in rows["vLLM"].detail
    assert rows["fastText lid.176"].status == "ok" and rows["fastText lid.176"].detail.endswith("lid.176.ftz")
    assert {"lid176", "cld3", "cld2"} <= set(rows["language-ID backends"].detail.split(", "))
    assert rows["Hugging Face token"].detail in ("configured", "none (public models only)")  # never the token
    assert doctor.failed(list(rows.values())) == []


def test_a_missing_comet_environment_fails_a_config_that_needs_it(monkeypatch):
    monkeypatch.setenv("PREFSYNTH_COMET_PYTHON", "/nonexistent/python")
    done = subprocess.run([sys.executable, "-m", "prefsynth.cli", "doctor", str(REPO / "pipelines" / "demo-mt.yaml")],
                          capture_output=True, text=True, env={**__import__("os").environ, "COLUMNS": "250"})
    assert done.returncode == 1, done.stdout[-3000:]
    assert "COMET environment" in done.stderr and "make setup" in done.stdout
    assert "/nonexistent/python does not exist" in done.stdout
    plain = doctor.run()  # without a config COMET is only a warning
    assert _rows(plain)["COMET environment"].status == "warn" and not doctor.failed(plain)


def test_a_model_folder_that_does_not_exist_is_named(tmp_path):
    config = demo_config()
    config["generators"][0]["model"] = str(tmp_path / "no-such-model")
    checks = doctor.config_checks(write_config(tmp_path / "missing.yaml", config))
    failures = doctor.failed(checks)
    assert failures and any(str(tmp_path / "no-such-model") in check.detail for check in failures)


def test_an_unreachable_ray_address_fails_and_local_does_not(tmp_path):
    config = demo_config(executor={"type": "ray", "address": "127.0.0.1:1"})
    rows = _rows(doctor.config_checks(write_config(tmp_path / "ray.yaml", config)))
    assert rows["Ray cluster"].status == "FAIL" and "127.0.0.1:1 is not reachable" in rows["Ray cluster"].detail
    assert "ray start --head" in rows["Ray cluster"].fix
    assert doctor.ray_check("local").status == "ok"
    assert rows["prompts and languages"].status == "ok" and rows["disk"].status == "ok"


def test_the_disk_estimate_grows_with_the_build(tmp_path):
    from prefsynth.pipeline import Pipeline

    cfg = Pipeline(demo_config(), base_dir=REPO / "pipelines").config
    assert doctor.disk_estimate(cfg, 20_000) == pytest.approx(20_000 / 48 * doctor.disk_estimate(cfg, 48), rel=1e-6)
    assert doctor.disk_estimate(cfg, 1_000_000) > 1 << 30  # a million prompts: gigabytes, not nothing
