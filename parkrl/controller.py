"""The single controller: set up a run, then step, log and checkpoint until done or stopped.

    for step: generate -> reward -> logprobs -> advantages -> update -> sync   (parkrl.step)
              log metrics and samples; checkpoint every trainer.save_every steps
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from parkrl import checkpoint
from parkrl.algorithms import registered_names
from parkrl.config import Config, ConfigError, validate
from parkrl.data import TaskPrompts
from parkrl.metrics import MetricsWriter, PhaseTimer
from parkrl.models import load_tokenizer, resolve_model_path
from parkrl.rewards import load_reward
from parkrl.rollout_ahead import Rollouts
from parkrl.step import eval_due, evaluate, rl_step, sample_rows
from parkrl.stop import StopRequest
from parkrl.workers.cluster import ray_cluster
from parkrl.workers.fleet import Fleet
from parkrl.workers.group import WorkerError, WorkerTimeout
from parkrl.workers.process import import_plugins


def train(cfg: Config) -> Path:
    """Run RL steps up to `trainer.total_steps`, continuing from a checkpoint as `trainer.resume`
    says; returns the output directory. Every check of the config and data runs before any
    worker starts."""
    try:
        import_plugins(cfg.trainer.imports)
    except ImportError as e:
        raise ConfigError(str(e)) from e
    validate(cfg, registered_names())
    t = cfg.trainer
    out = Path(t.output_dir)
    resume_from = checkpoint.resume_point(t.resume, out)
    saved = checkpoint.read_state(resume_from) if resume_from else None
    model_path = resolve_model_path(cfg.model.path, cfg.model.cache_dir)
    tokenizer = load_tokenizer(model_path)
    data = TaskPrompts(cfg.data, shuffle_seed=t.seed)
    reward_fn = load_reward(cfg.reward.cls, dict(cfg.reward.args))
    start = 0
    if saved:
        data.load_state_dict(saved["data"])
        start = saved["step"]
        for change in checkpoint.config_changes(saved["config"], cfg):
            print(f"[parkrl] warning: resuming with a changed config: {change}", file=sys.stderr, flush=True)
    checkpoint.check_no_later_checkpoints(out, start)
    if start >= t.total_steps:
        print(f"[parkrl] {out} already holds step {start} (trainer.total_steps={t.total_steps}): nothing to do; "
              f"raise trainer.total_steps to train on, or pick a new trainer.output_dir", flush=True)
        return out
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2, default=str))
    print(f"[parkrl] model {model_path} | {len(data.train)} train / {len(data.eval)} eval questions "
          f"({data.excluded} eval questions removed from training)"
          + (f" | resuming after step {start} from {resume_from}" if saved else ""), flush=True)

    log = MetricsWriter(out, t.total_steps, start, t.loggers, asdict(cfg), t.wandb_project)
    with ray_cluster(cfg), StopRequest() as stop:
        fleet = rollouts = None
        try:
            fleet = Fleet(cfg, model_path)
            rollouts = Rollouts(fleet, tokenizer, reward_fn, data, cfg)
            counters = saved.get("counters", {}) if saved else {}
            fleet.restarts = counters.get("worker_restarts", 0)
            nonfinite_run = counters.get("nonfinite_run", 0)
            if saved:
                checkpoint.restore(resume_from, fleet)
            elif eval_due(cfg, 0):
                timer = PhaseTimer()
                with timer("eval"):
                    before = evaluate(fleet, tokenizer, reward_fn, data.eval, cfg)
                log.log(0, {**before, **timer.metrics()})
            for step in range(start + 1, t.total_steps + 1):
                try:
                    metrics, batch = rl_step(step, fleet, rollouts, tokenizer, reward_fn, data, cfg)
                except (WorkerError, WorkerTimeout) as e:
                    e.add_note(_resume_hint(out, step))
                    raise
                log.log(step, metrics)
                log.log_samples(step, sample_rows(batch, tokenizer, t.samples_per_step))
                nonfinite_run = _check_finite(metrics, nonfinite_run, step, t.max_nonfinite_steps)
                if (t.save_every and step % t.save_every == 0) or stop.requested or step == t.total_steps:
                    t0 = time.monotonic()
                    path = checkpoint.save(fleet, out, step, rollouts.data_state(), cfg,
                                           {"worker_restarts": fleet.restarts, "nonfinite_run": nonfinite_run})
                    print(f"[parkrl] checkpoint {path} ({time.monotonic() - t0:.1f} s)", flush=True)
                if stop.requested:
                    print(f"[parkrl] stopped by {stop.requested} after step {step}; continue with the same "
                          f"command (trainer.resume=auto)", flush=True)
                    return out
            if t.save_final:
                fleet.save_hf(str(out / "final"))
        finally:
            stop.shielded = True  # a further Ctrl-C must not cut the engines' shutdown short
            if fleet is not None:
                fleet.shutdown()
            if rollouts is not None:
                rollouts.close()  # after the fleet: a batch still generating ahead fails fast
            log.close()
    return out


def _check_finite(metrics: dict[str, float], run: int, step: int, limit: int) -> int:
    """Warn about skipped (NaN/inf) updates; stop after `limit` such steps in a row. Returns the
    new count of consecutive such steps."""
    skipped = metrics.get("learner/nonfinite_updates", 0)
    if not skipped:
        return 0
    run += 1
    print(f"[parkrl] warning: step {step}: {int(skipped)} update(s) skipped, the loss or gradient was NaN/inf "
          f"({run} step(s) in a row)", file=sys.stderr, flush=True)
    if run >= limit:
        raise RuntimeError(
            f"{run} steps in a row had a NaN/inf loss (trainer.max_nonfinite_steps={limit}); check the rewards, "
            f"advantages and learner.lr. The last checkpoint holds the weights from before"
        )
    return run


def _resume_hint(out: Path, step: int) -> str:
    found = checkpoint.complete_checkpoints(out)
    where = f"the last checkpoint is {found[-1]}" if found else "there is no checkpoint yet"
    return (f"The run stopped in step {step}; {where}. Running the same command again continues from it "
            f"(trainer.resume=auto).")
