"""Checkpoints: everything a run needs to continue exactly where it stopped.

Layout under `trainer.output_dir`:

    checkpoints/step_000003/
        learner/             policy (+ critic) weights and optimizer state, sharded: each learner
                             rank writes its shards (torch.distributed.checkpoint for FSDP2,
                             DeepSpeed's ZeRO checkpoint for learner.backend=deepspeed)
        learner/rank<r>.pt   per-rank counters and torch RNG state
        trainer_state.json   step, data-sampler position, resolved config (written last)

A checkpoint is written into `step_N.tmp` and renamed when complete, so a run killed while
saving leaves the previous checkpoints intact and `trainer.resume=auto` never picks a torn one.
The reference policy is not saved (it is frozen: reloaded from `model.path`); the engines get
the restored weights through the normal weight sync.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from parkrl.config import Config, ConfigError

STATE_FILE = "trainer_state.json"
# Keys that may differ between a run and its resumption without changing what it computes.
_RESUMABLE_CHANGES = ("trainer.resume", "trainer.total_steps", "trainer.output_dir", "trainer.save_every",
                      "trainer.keep_checkpoints", "trainer.worker_timeout_s", "trainer.sync_timeout_s",
                      "trainer.loggers", "trainer.eval_every", "trainer.save_final", "trainer.save_final_checkpoint",
                      "trainer.verbose")


def checkpoint_root(output_dir: Path) -> Path:
    return Path(output_dir) / "checkpoints"


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Finished checkpoints of a run, oldest first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    done = [p for p in root.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp") and (p / STATE_FILE).is_file()]
    return sorted(done, key=lambda p: int(p.name.removeprefix("step_")))


def resume_point(resume: str, output_dir: Path) -> Path | None:
    """The checkpoint `trainer.resume` asks for: "never" -> None, "auto" -> the latest complete
    one under output_dir (None if there is none), else that checkpoint directory."""
    if resume == "never":
        return None
    if resume == "auto":
        found = complete_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise ConfigError(
            f"trainer.resume={resume!r}: not a complete parkrl checkpoint (no {STATE_FILE} in it); "
            f"give a checkpoints/step_N directory, 'auto' or 'never'"
        )
    return path


def check_no_later_checkpoints(output_dir: Path, start: int) -> None:
    """Refuse to start at step `start` where checkpoints of later steps exist: they belong to
    another timeline, and pruning or `resume=auto` would mix the two runs."""
    later = [p.name for p in complete_checkpoints(output_dir) if int(p.name.removeprefix("step_")) > start]
    if later:
        raise ConfigError(
            f"trainer.output_dir={str(output_dir)!r} holds checkpoints after step {start} ({', '.join(later)}) "
            f"from another run: use trainer.resume=auto to continue it, a new trainer.output_dir, or delete them"
        )


def logged_steps(output_dir: Path) -> list[int]:
    """The trained steps (>= 1) that `metrics.jsonl` in output_dir holds rows of (torn lines skipped)."""
    path = Path(output_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            step = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(step, int) and step >= 1:
            steps.append(step)
    return sorted(set(steps))


def check_logs_have_a_checkpoint(output_dir: Path, start: int, resume: str) -> bool:
    """Refuse to start from scratch (`start` 0: no checkpoint to continue from) with
    `trainer.resume=auto` in a directory whose metrics.jsonl holds trained steps: their
    checkpoints were deleted (or never written), and starting over would overwrite that run's
    metrics.jsonl and samples.jsonl without a word. `trainer.resume=never` starts over on
    purpose. Returns whether earlier logs will be overwritten."""
    if start > 0:
        return False
    steps = logged_steps(output_dir)
    if steps and resume == "auto":
        raise ConfigError(
            f"trainer.output_dir={str(output_dir)!r} holds metrics.jsonl of an earlier run (steps {steps[0]}-"
            f"{steps[-1]}) but no checkpoint to continue from (none complete under {checkpoint_root(output_dir)}). "
            f"Starting over would overwrite its metrics.jsonl and samples.jsonl. Choose: a new trainer.output_dir; "
            f"or trainer.resume=never to start over in it (those files are rewritten); or put the checkpoints back "
            f"to continue"
        )
    return bool(steps)


def read_state(path: Path) -> dict[str, Any]:
    return json.loads((Path(path) / STATE_FILE).read_text())


def config_changes(saved: dict[str, Any], cfg: Config) -> list[str]:
    """Config keys that differ from the checkpoint's, other than those a resume may change."""
    def flat(d: dict, prefix: str = "") -> dict[str, Any]:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict) and not k.endswith("args"):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    old, new = flat(saved), flat(json.loads(json.dumps(asdict(cfg), default=str)))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k) and k not in _RESUMABLE_CHANGES]


def save(fleet, output_dir: Path, step: int, data_state: dict[str, Any], cfg: Config,
         counters: dict[str, int] | None = None) -> Path:
    """Write checkpoint `step` (learner shards, then the trainer state with the data sampler's
    position and the controller's `counters`), then keep only the latest
    `trainer.keep_checkpoints`. Returns its directory."""
    root = checkpoint_root(output_dir)
    final = root / f"step_{step:06d}"
    tmp = root / f"step_{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    fleet.save_checkpoint(str((tmp / "learner").resolve()))
    state = {"step": step, "data": data_state, "counters": counters or {}, "config": asdict(cfg)}
    (tmp / STATE_FILE).write_text(json.dumps(state, default=str))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in complete_checkpoints(output_dir)[: -cfg.trainer.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def restore(path: Path, fleet) -> dict[str, Any]:
    """Load the learner state of checkpoint `path` and push its weights to the engines;
    returns the trainer state (step, data position)."""
    state = read_state(path)
    fleet.load_checkpoint(str((Path(path) / "learner").resolve()))
    fleet.sync_weights()
    return state
