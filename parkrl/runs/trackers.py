"""Optional metric sinks beside metrics.jsonl: TensorBoard and Weights & Biases.

Chosen by `trainer.loggers`; each is imported only when named, so neither is a dependency.
W&B runs offline with `WANDB_MODE=offline` (no network; `wandb sync` uploads later).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


class TensorBoardTracker:
    """Scalars into `<output_dir>/tensorboard` (`tensorboard --logdir <output_dir>`)."""

    def __init__(self, output_dir: Path, start_step: int) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError("trainer.loggers=[tensorboard] needs the tensorboard package: pip install tensorboard") from e
        # On resume, events an interrupted attempt logged after the checkpoint are purged.
        self._writer = SummaryWriter(str(Path(output_dir) / "tensorboard"), purge_step=start_step + 1 if start_step else None)

    def log(self, step: int, metrics: dict[str, float | None]) -> None:
        for key, value in metrics.items():
            if value is not None:
                self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class WandbTracker:
    """A W&B run named after the output directory, in project `trainer.wandb_project`.

    A resumed run continues the same W&B run; W&B ignores steps it has already seen, so steps
    an interrupted attempt logged after its last checkpoint keep their first values there
    (metrics.jsonl and TensorBoard are rewound exactly)."""

    def __init__(self, output_dir: Path, config: dict[str, Any], project: str, start_step: int) -> None:
        try:
            import wandb
        except ImportError as e:
            raise ImportError("trainer.loggers=[wandb] needs the wandb package: pip install wandb") from e
        out = Path(output_dir).resolve()
        run_id = "parkrl-" + hashlib.sha1(str(out).encode()).hexdigest()[:12]  # the same run when resumed
        self._run = wandb.init(project=project, name=out.name, dir=str(out), config=config, id=run_id,
                               resume="allow" if start_step else None)

    def log(self, step: int, metrics: dict[str, float | None]) -> None:
        self._run.log({k: v for k, v in metrics.items() if v is not None}, step=step)

    def close(self) -> None:
        self._run.finish()


def make_trackers(names: list[str], output_dir: Path, config: dict[str, Any], wandb_project: str,
                  start_step: int) -> list:
    """The trackers named in `trainer.loggers` (start_step > 0: a resumed run)."""
    trackers = []
    for name in names:
        if name == "tensorboard":
            trackers.append(TensorBoardTracker(output_dir, start_step))
        elif name == "wandb":
            trackers.append(WandbTracker(output_dir, config, wandb_project, start_step))
    return trackers
