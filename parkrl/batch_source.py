"""Where each step's batch comes from: generated in the step (on-policy), or, with
`rollout.one_step_off`, generated one step ahead while the learner trains.

One step off, step k trains on a batch the engines generated with the weights of step k-2
while the learner holds those of step k-1 (a policy lag of one update; step 1 has none). The
learner corrects for it by importance sampling (`algorithm.rollout_correction`: `auto` is TIS). The
engines take new weights only between generations: the sync at the end of step k waits for the
batch of step k+1 to be complete.

    step k:  [batch k ready] -> submit batch k+1 (engines: weights k-1) -> logprobs -> update
             -> wait for batch k+1 -> sync weights k -> ...
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from parkrl.batch import TrajectoryBatch
from parkrl.collect import collect_batch
from parkrl.config import Config
from parkrl.data import TaskPrompts
from parkrl.runs.metrics import PhaseTimer


class BatchSource:
    """The batch source of a run. `batch(step, timer)` gives step `step`'s scored batch;
    `settle(timer)` must be called before the weight sync; `data_state()` is the sampler state
    to checkpoint (taken before any batch still in flight drew its prompts, so a resume draws
    them again)."""

    def __init__(self, fleet, tokenizer, reward_fn, data: TaskPrompts, cfg: Config) -> None:
        self.fleet, self.tokenizer, self.reward_fn, self.data, self.cfg = fleet, tokenizer, reward_fn, data, cfg
        self.ahead = cfg.rollout.one_step_off
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollout-ahead") if self.ahead else None
        self._pending: tuple[int, Future] | None = None  # (step, its batch being generated)
        self._ready: tuple[int, Any] | None = None  # (step, its batch), generated and not yet trained
        self._drawn_from: dict[str, Any] | None = None  # sampler state before the batch ahead drew prompts

    def batch(self, step: int, timer: PhaseTimer) -> tuple[TrajectoryBatch, dict[str, float]]:
        """Step `step`'s batch and its metrics; one step off, also rollout/policy_lag (updates
        between the weights that generated it and the learner's) and timing/ahead_* (the
        generation that overlapped the previous step)."""
        if self._ready is not None and self._ready[0] == step:
            (batch, metrics, seconds), lag = self._ready[1], 1.0
            metrics.update({k.replace("timing/", "timing/ahead_"): v for k, v in seconds.items()})
        else:  # on-policy, or the first step one step off (also after a resume): nothing ahead yet
            batch, metrics = self._collect(step, timer)
            lag = 0.0
        self._ready = self._drawn_from = None
        if self.ahead:
            if step < self.cfg.trainer.total_steps:
                self._submit(step + 1)
            metrics["rollout/policy_lag"] = lag
        return batch, metrics

    def _collect(self, step: int, timer: PhaseTimer) -> tuple[TrajectoryBatch, dict[str, float]]:
        return collect_batch(step, self.fleet, self.tokenizer, self.reward_fn, self.data, self.cfg, timer)

    def _submit(self, step: int) -> None:
        self._drawn_from = self.data.state_dict()

        def work() -> tuple[TrajectoryBatch, dict[str, float], dict[str, float]]:
            timer = PhaseTimer()
            batch, metrics = self._collect(step, timer)
            return batch, metrics, timer.seconds

        self._pending = (step, self._pool.submit(work))

    def settle(self, timer: PhaseTimer) -> None:
        """Wait for the batch generating ahead (the engines must be idle for a weight sync). Its
        errors surface here, in the step that started it."""
        if self._pending is None:
            return
        step, future = self._pending
        with timer("generate_wait"):
            result = future.result()  # every engine call inside has its own timeout
        self._pending, self._ready = None, (step, result)

    def data_state(self) -> dict[str, Any]:
        """The prompt sampler's state as of the batches trained so far."""
        return self._drawn_from if self._drawn_from is not None else self.data.state_dict()

    def close(self) -> None:
        """Stop generating ahead (call after the fleet is shut down, so a pending call fails fast)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
