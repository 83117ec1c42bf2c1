"""A quiet terminal: model workers' own output (vLLM, torch) goes to RUN/logs/<stage>.log, the
terminal keeps prefsynth's lines, and a caller's logging and warnings setup is left as it was. (A
failing model stage's log tail: tests/test_build.py, test_a_model_that_fails_to_load_...)"""
import re

from conftest import DEMO_BUILD_CALLER

from prefsynth.executor import log_tail

# what vLLM, torch and Triton print when an engine starts (the lines the terminal used to show)
ENGINE_CHATTER = re.compile(r"INFO|WARNING|Triton|NUMA|tcmalloc|EngineCore|\[[a-z_]+\.py:\d+\]")


def _terminal_lines(text: str) -> list[str]:
    """What a terminal shows of a stream: each line's last state after carriage returns."""
    return [line.rsplit("\r", 1)[-1] for line in text.splitlines() if line.strip()]


def test_a_build_from_python_shows_only_its_own_lines_and_logs_the_engines(demo_build):
    lines = _terminal_lines(DEMO_BUILD_CALLER["stderr"])
    assert not [line for line in lines if ENGINE_CHATTER.search(line)], lines
    for stage in ("generate.tiny-chat", "judge.rm"):
        log = demo_build / "logs" / f"{stage}.log"
        assert f"{stage}: loading its model (log: {log})" in lines
        assert any(re.fullmatch(rf"{re.escape(stage)}: model loaded in \d+ s", line) for line in lines), lines
        assert any(line.startswith(f"{stage}: 100%") for line in lines)  # its progress bar, relayed
        text = log.read_text(errors="replace")
        assert f"worker for {stage}" in text and re.search(r"INFO .*vllm|vllm.*INFO", text), text[:2000]
    assert not (demo_build / "logs" / "filter.log").exists()  # CPU stages run in the build's own process


def test_a_build_leaves_the_callers_logging_and_warnings_alone(demo_build):
    before, after = DEMO_BUILD_CALLER["before"], DEMO_BUILD_CALLER["after"]
    assert after["handlers"] == before["handlers"] and after["level"] == before["level"]
    # Every filter the caller had is still there, in order; a filter added during the build (an
    # import's own, e.g. urllib3's for DependencyWarning) is scoped to a library's warning class:
    # none silences a built-in category or everything.
    added = [f for f in after["filters"] if f not in before["filters"]]
    assert [f for f in after["filters"] if f in before["filters"]] == before["filters"]
    assert all(category.__module__ != "builtins" and not category.__module__.startswith("prefsynth")
               for _, _, category, _, _ in added), added
    assert "after the build" in DEMO_BUILD_CALLER["handler"].messages  # the user's handler still receives


def test_log_tail_keeps_a_redrawn_bar_once(tmp_path):
    log = tmp_path / "stage.log"
    log.write_text("old run\n=== header ===\n" + "".join(f"line {i}\n" for i in range(40)) + "bar 10%\rbar 50%\rbar 100%\n")
    tail = log_tail(log, lines=5).splitlines()
    assert tail == ["line 36", "line 37", "line 38", "line 39", "bar 100%"]
    offset = len("old run\n")
    assert log_tail(log, offset, lines=100).splitlines()[0] == "=== header ==="
    assert log_tail(tmp_path / "missing.log") == ""
