"""`report_to`: the step records of metrics.jsonl, also sent to TensorBoard, Weights & Biases or
Trackio through those libraries themselves (optional extras, checked before any work starts)."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

MODULES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}


def check_reporters(names: list[str]) -> None:
    """Fail at once, with the install command, when a reporter's package is missing."""
    for name in names:
        if importlib.util.find_spec(MODULES[name]) is None:
            raise RuntimeError(f"report_to: {name} needs the {MODULES[name]} package: pip install 'prefsynth[{name}]'")


class Reporters:
    """One object for every configured reporter; only numbers are sent, under metrics.jsonl's names."""

    def __init__(self, names: list[str], output_dir: Path, run_name: str, config: dict, resume: bool):
        check_reporters(names)
        self.sinks = []
        project = os.environ.get("WANDB_PROJECT") or os.environ.get("TRACKIO_PROJECT") or "prefsynth"
        for name in names:
            if name == "tensorboard":
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(log_dir=str(output_dir / "tensorboard"))
                writer.add_text("config", f"```\n{config}\n```")
                self.sinks.append((lambda values, step, w=writer: [w.add_scalar(k, v, step) for k, v in values.items()],
                                   writer.close))
            elif name == "wandb":
                import wandb

                run = wandb.init(project=project, name=run_name, dir=str(output_dir), config=config,
                                 resume="allow" if resume else None)
                self.sinks.append((lambda values, step, r=run: r.log(values, step=step), run.finish))
            elif name == "trackio":
                import trackio

                trackio.init(project=project, name=run_name, config=config, resume="allow" if resume else "never")
                self.sinks.append((lambda values, step: trackio.log(values, step=step), trackio.finish))

    def log(self, record: dict) -> None:
        values = {k: float(v) for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        for log, _ in self.sinks:
            log(values, record["step"])

    def close(self) -> None:
        for _, close in self.sinks:
            close()
