"""The single controller: set up a run, then step, log and checkpoint until done or stopped.

    for step: generate -> reward -> logprobs -> advantages -> update -> sync   (parkrl.step)
              log metrics and samples; checkpoint every trainer.save_every steps

Every check of the config, model, data and output directory runs before any worker starts (and
before the heavy imports, so bad input fails in seconds).
"""
from __future__ import annotations

import json
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, replace
from pathlib import Path

from parkrl.config import Config, ConfigError, RewardConfig, reward_is_called, validate
from parkrl.data import TaskPrompts, check_prompt_lengths
from parkrl.models import load_tokenizer, resolve_dtype, resolve_model_path
from parkrl.plugins import import_plugins
from parkrl.rewards import RewardFunction, load_reward
from parkrl.runs import checkpoint, console
from parkrl.runs.errors import RunError, raised_in
from parkrl.runs.metrics import LogprobDiffRange, MetricsWriter, PhaseTimer
from parkrl.runs.stop import StopRequest
from parkrl.workers.cluster import ray_cluster
from parkrl.workers.group import WorkerDied, WorkerError, WorkerTimeout


def train(cfg: Config, reward_fn: RewardFunction | None = None) -> Path:
    """Run RL steps up to `trainer.total_steps`, continuing from a checkpoint as `trainer.resume`
    says; returns the output directory. Every check of the config and data runs before any
    worker starts. `reward_fn`: use this object instead of building `reward.cls` (parkrl.run).

    A worker failure the fleet cannot ride out (the learner's node lost, engines below
    resources.rollout.min_workers) ends the attempt within its timeouts; with
    `trainer.max_restarts=N` the workers are then started again, in this process, from the last
    checkpoint (as trainer.resume=auto would), up to N times."""
    restarts = 0
    while True:
        try:
            return _train_once(cfg, reward_fn)
        except (WorkerError, WorkerTimeout) as e:
            last = checkpoint.complete_checkpoints(Path(cfg.trainer.output_dir))
            if restarts >= cfg.trainer.max_restarts or not last:
                if cfg.trainer.max_restarts and not last:
                    e.add_note("trainer.max_restarts: no checkpoint to restart from yet (trainer.save_every)")
                raise
            restarts += 1
            cause = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            print(f"[parkrl] event: the run's workers failed ({cause}); restarting them from {last[-1]} "
                  f"({restarts}/{cfg.trainer.max_restarts} of trainer.max_restarts)", flush=True)
            cfg = replace(cfg, trainer=replace(cfg.trainer, resume="auto"))


def _train_once(cfg: Config, reward_fn: RewardFunction | None) -> Path:
    """One attempt of `train`: check, start the workers, step until done or stopped."""
    _user_code(import_plugins, "trainer.imports", cfg.trainer.imports)
    validate(cfg)  # registered estimator names are checked below, once torch is imported
    t = cfg.trainer
    out = Path(t.output_dir)
    resume_from = checkpoint.resume_point(t.resume, out)
    saved = checkpoint.read_state(resume_from) if resume_from else None
    start = saved["step"] if saved else 0
    checkpoint.check_no_later_checkpoints(out, start)
    if start >= t.total_steps:
        print(f"[parkrl] {out} already holds step {start} (trainer.total_steps={t.total_steps}): nothing to do; "
              f"raise trainer.total_steps to train on, or pick a new trainer.output_dir", flush=True)
        return out
    overwrite_logs = checkpoint.check_logs_have_a_checkpoint(out, start, t.resume)
    model_path = resolve_model_path(cfg.model.path, cfg.model.cache_dir)
    for k, m in enumerate(cfg.reward.models):
        resolve_model_path(m.path, key=f"reward.models[{k}].path")
    data = TaskPrompts(cfg.data, shuffle_seed=t.seed)
    from parkrl.algorithms import registered_names

    validate(cfg, registered_names())
    tokenizer = load_tokenizer(model_path)
    if not cfg.env.cls:  # multi-turn prompts come from the environment's reset(), checked per episode
        check_prompt_lengths(data, tokenizer, cfg.rollout.max_new_tokens, cfg.rollout.max_model_len)
    from parkrl.workers.env_service import env_service_for_run
    from parkrl.workers.sandbox_service import check_sandbox, sandbox_for_run

    if cfg.env.remote:  # the class is built by the environment servers (checked where they run)
        from parkrl.workers.env_service import check_env_service

        check_sandbox(cfg, bool(cfg.env.url) and check_env_service(cfg))
    else:
        check_sandbox(cfg, bool(cfg.env.cls) and _user_code(_uses_sandbox, f"env.cls={cfg.env.cls!r}", cfg))
    reward_fn = reward_fn if reward_fn is not None else reward_function(cfg)
    if saved:
        data.load_state_dict(saved["data"])
        for change in checkpoint.config_changes(saved["config"], cfg):
            print(f"[parkrl] warning: resuming with a changed config: {change}", file=sys.stderr, flush=True)
    if overwrite_logs:
        print(f"[parkrl] trainer.resume=never: starting over in {out}; its metrics.jsonl and samples.jsonl are "
              f"rewritten", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    console.attach(out / "train.log")  # from here on what the console shows goes there too (the CLI's capture)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2, default=str))
    print(f"[parkrl] model {model_path} | {len(data.train)} train / {len(data.eval)} eval questions "
          f"({data.excluded} eval questions removed from training)"
          + (f" | resuming after step {start} from {resume_from}" if saved else ""), flush=True)

    from parkrl.batch_source import BatchSource
    from parkrl.step import eval_due, evaluate, rl_step, sample_rows
    from parkrl.workers.fleet import Fleet

    user_modules = {*t.imports} | ({type(reward_fn).__module__} if type(reward_fn) is not RewardFunction else set())
    lp_diff = LogprobDiffRange(resolve_dtype(cfg.rollout.dtype), resolve_dtype(cfg.learner.dtype), cfg.rollout.one_step_off)
    log = MetricsWriter(out, t.total_steps, start, t.loggers, asdict(cfg), t.wandb_project, lp_diff)
    phase = "while starting the Ray cluster" if t.runtime == "ray" else "while starting the workers"
    # Until the first step begins there is nothing to save: a signal stops at once, except while
    # ray.init runs (an exception in it would orphan Ray's processes): then right after it.
    stop = StopRequest()
    stop.deferred = True
    try:
        with stop, ray_cluster(cfg):
            stop.deferred, stop.immediate = False, True
            if stop.requested:  # a signal while ray.init ran
                raise KeyboardInterrupt(stop.requested)
            fleet = source = None
            phase = "while starting the workers"
            services = ExitStack()
            try:
                cfg = services.enter_context(sandbox_for_run(cfg, out))  # the service the tools use, if any
                cfg = services.enter_context(env_service_for_run(cfg, out))  # env.remote: where episodes run
                fleet = Fleet(cfg, model_path)
                source = BatchSource(fleet, tokenizer, reward_fn, data, cfg)
                counters = saved.get("counters", {}) if saved else {}
                fleet.restarts = counters.get("worker_restarts", 0)
                nonfinite_run = counters.get("nonfinite_run", 0)
                if saved:
                    checkpoint.restore(resume_from, fleet)
                elif eval_due(cfg, 0):
                    phase = "in the eval before step 1"
                    timer = PhaseTimer()
                    with timer("eval"):
                        before = evaluate(fleet, tokenizer, reward_fn, data.eval, cfg)
                    log.log(0, {**before, **timer.metrics()})
                if stop.requested:  # a signal whose KeyboardInterrupt a library swallowed
                    raise KeyboardInterrupt(stop.requested)
                stop.immediate = False
                for step in range(start + 1, t.total_steps + 1):
                    phase = f"in step {step}"
                    metrics, batch = rl_step(step, fleet, source, tokenizer, reward_fn, data, cfg)
                    log.log(step, metrics)
                    log.log_samples(step, sample_rows(batch, tokenizer, t.samples_per_step))
                    nonfinite_run = _check_finite(metrics, nonfinite_run, step, t.max_nonfinite_steps)
                    if checkpoint_due(cfg, step, bool(stop.requested)):
                        t0 = time.monotonic()
                        path = checkpoint.save(fleet, out, step, source.data_state(), cfg,
                                               {"worker_restarts": fleet.restarts, "nonfinite_run": nonfinite_run})
                        print(f"[parkrl] checkpoint {path} ({time.monotonic() - t0:.1f} s)", flush=True)
                    if stop.requested:
                        print(f"[parkrl] stopped by {stop.requested} after step {step}; continue with the same "
                              f"command (trainer.resume=auto)", flush=True)
                        return out
                if t.save_final:
                    phase = "while saving the final model"
                    fleet.save_hf(str(out / "final"))
            except (WorkerError, WorkerTimeout) as e:
                e.add_note(_failure_hint(e, cfg, out, phase))
                raise
            except Exception as e:
                if raised_in(e, user_modules) and not isinstance(e, RunError):
                    raise RunError(f"{e}") from e  # the user's reward or plugin code raised: no rerun gets past it
                raise
            finally:
                stop.shielded = True  # a further Ctrl-C must not cut the engines' shutdown short
                if fleet is not None:
                    fleet.shutdown()
                if source is not None:
                    source.close()  # after the fleet: a batch still generating ahead fails fast
                services.close()  # after the engines: no episode uses the sandbox service any more
    except KeyboardInterrupt as e:  # a second Ctrl-C, or a signal before the first step
        if stop.requested and not e.args:  # a library may re-raise the interrupt without the signal name
            e.args = (stop.requested,)
        found = checkpoint.complete_checkpoints(out)
        e.add_note(f"stopped at once {phase}; every worker was shut down"
                   + (f"; the last checkpoint is {found[-1]}" if found else "; no checkpoint was saved"))
        raise
    finally:
        log.close()
    return out


def reward_function(cfg: Config) -> RewardFunction:
    """The run's reward function, built from `reward.cls` and `reward.args`. With
    `env.final_reward=false` the environment's rewards alone score, so the default `reward.cls`
    is not built (it need not accept the data): a plain RewardFunction stands in, whose
    `is_correct` (reward >= 1.0) counts eval/accuracy. A `reward.cls` you name is still built,
    for its `is_correct`."""
    if not reward_is_called(cfg) and cfg.reward.cls == RewardConfig.cls:
        return RewardFunction()
    return _user_code(load_reward, f"reward.cls={cfg.reward.cls!r}", cfg.reward.cls, dict(cfg.reward.args))


def _user_code(fn, key: str, *args):
    """`fn(*args)`, where fn runs the user's code (imports a module, builds a class): an exception
    it raises, other than a ConfigError, is the user's code failing (RunError, exit code 4)."""
    try:
        return fn(*args)
    except ConfigError:
        raise
    except Exception as e:
        raise RunError(f"{key}: the user code raised {type(e).__name__}: {e}") from e


def _uses_sandbox(cfg: Config) -> bool:
    """Build one environment as the workers will (a bad env.cls or env.args fails here, before any
    worker starts) and say whether its tools need the sandbox service."""
    from parkrl.envs import environment_factory

    env = environment_factory(cfg.env.cls, dict(cfg.env.args))()
    try:
        return bool(getattr(env, "uses_sandbox", False))
    finally:
        env.close()


def checkpoint_due(cfg: Config, step: int, stop_requested: bool) -> bool:
    """Whether to checkpoint after `step`: every `trainer.save_every` steps, on a stop request,
    and after the last step when `trainer.save_final_checkpoint`."""
    t = cfg.trainer
    return bool((t.save_every and step % t.save_every == 0) or stop_requested
                or (step == t.total_steps and t.save_final_checkpoint))


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
        raise RunError(
            f"{run} steps in a row had a NaN/inf loss (trainer.max_nonfinite_steps={limit}); check the rewards, "
            f"advantages and learner.lr. The last checkpoint holds the weights from before"
        )
    return run


def _failure_hint(error: Exception, cfg: Config, out: Path, phase: str) -> str:
    """What to do after a worker failure (`phase`: where it happened): run again (a death or a
    timeout, which a rerun can get past) or fix the cause first (a worker raised: a rerun as is
    fails the same way)."""
    found = checkpoint.complete_checkpoints(out)
    where = f"The run stopped {phase}"
    if isinstance(error, (WorkerDied, WorkerTimeout)):
        if found:
            return (f"{where}; the last checkpoint is {found[-1]}. Running the same command again continues from it "
                    f"(trainer.resume=auto).")
        again = ("Running the same command again starts over" if not checkpoint.logged_steps(out) else
                 "To start over, run the same command with trainer.resume=never (metrics.jsonl holds steps "
                 "without a checkpoint)")
        return f"{where}, before any checkpoint (trainer.save_every={cfg.trainer.save_every}). {again}."
    text = str(error)
    if any(k in text for k in ("environment step", "env.args", "env.cls", "env.on_error")):
        fix = f"fix the environment (env.cls={cfg.env.cls!r}, env.args)"
    elif "max_model_len" in text:
        fix = "shorten the prompts or raise rollout.max_model_len"
    else:
        fix = "fix the cause named above"
    then = (f"then run again (it picks up at the last checkpoint, {found[-1]})" if found
            else "then run again (there is no checkpoint yet: it starts over"
                 + (", with trainer.resume=never)" if checkpoint.logged_steps(out) else ")"))
    return f"{where}: a worker raised, and a rerun as is would fail the same way. First {fix}, {then}."
