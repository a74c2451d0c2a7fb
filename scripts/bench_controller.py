"""Controller-side time of one RL step on synthetic data: no model, no Ray, no engine.

    .venv/bin/python scripts/bench_controller.py [--samples 64] [--length 1024] [--ranks 2] [--repeats 5]

Runs the real `parkrl.step.rl_step` (and `sample_rows`, which the controller calls after it) with
a fake fleet: the engines return precomputed completions of `--length` tokens (python lists,
as vLLM hands them over), and the learner ranks return precomputed per-token values at once.
What remains is what the controller does between the engines and the learner: building the
batch from completions, scoring it (a trivial reward and tokenizer, so only the batch handling
counts), the per-token calls' sharding and gathering, logprob_diff, advantages, the update's
sharding, the step metrics and the sample rows. Arguments and results of the learner calls are
pickled as Ray would (protocol 5; arguments dumped and results loaded here, the worker's halves
are not counted).

Two recipes: "grpo" (2 mini-batches, so old logprobs and logprob_diff run; KL in the loss, so
reference logprobs) and "ppo" (GAE with a critic; KL in the reward). A third section times the
learner rank's input preparation (micro-batches and per-token fields padded for the loss; no
forward) on one rank's shard.

Runs against older trees too (module names are looked up): `cd OLD && PYTHONPATH=OLD python
/path/to/bench_controller.py`.

Measured on the 2-core CPU box, defaults (64 x 1024 tokens, 2 ranks), ms per step, ragged lists
(before) -> padded tensors (after): grpo 27 -> 16, ppo 351 -> 49 (GAE's advantages 315 -> 28:
what is left is the estimator's own loop over token positions), learner rank input prep 35 -> 3.
"""
from __future__ import annotations

import argparse
import functools
import pickle
import statistics
import threading
import time
from typing import Any

import torch

import parkrl.collect as collect
import parkrl.step as step_mod
from parkrl.config import Config
from parkrl.rewards import RewardFunction
from parkrl.workers.fleet import Fleet

try:  # module names moved between versions
    from parkrl.engines import Completion
except ImportError:  # pragma: no cover - older tree
    from parkrl.rollout import Completion
try:
    from parkrl.batch_source import BatchSource
except ImportError:  # pragma: no cover - older tree
    from parkrl.rollout_ahead import Rollouts as BatchSource

PROMPT_LEN = 64


class FakeTokenizer:
    """Constant-time text: the reward function and samples.jsonl see a string per row."""

    pad_token_id = 0

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=True):
        return list(range(3, 3 + PROMPT_LEN))

    def batch_decode(self, ids, skip_special_tokens=True):
        return ["7" if len(row) % 2 else "9" for row in ids]

    def decode(self, ids, skip_special_tokens=True):
        return "7"


class IsSeven(RewardFunction):
    def __call__(self, completions, messages, samples):
        return [float(c == "7") for c in completions]


class Prompts:
    eval: list = []

    def __init__(self) -> None:
        self.count = 0

    def next_prompts(self, k: int) -> list[dict[str, Any]]:
        self.count += k
        return [{"messages": [{"role": "user", "content": f"q{self.count + i}"}], "question": "q", "answer": "7"}
                for i in range(k)]

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count}


def roundtrip(x: Any) -> Any:
    return pickle.loads(pickle.dumps(x, protocol=5))


class FakeLearners:
    """Learner ranks answering at once; `worker_s` is the time spent on the workers' side."""

    def __init__(self, ranks: int) -> None:
        self.ranks, self.worker_s = ranks, {}

    def __len__(self) -> int:
        return self.ranks

    def call_each(self, method: str, args: list[tuple]) -> list:
        wire = [pickle.dumps(a, protocol=5) for a in args]  # the controller serialises the arguments
        t0 = time.perf_counter()
        results = [pickle.dumps(getattr(self, method)(*pickle.loads(w)), protocol=5) for w in wire]
        self.worker_s[method] = self.worker_s.get(method, 0.0) + time.perf_counter() - t0
        return [pickle.loads(r) for r in results]

    def per_token(self, batch, model: str):
        """Values shaped as the learner returns them: lists (old) or a [n, T] tensor (new)."""
        rollout = batch.rollout_logprobs
        if isinstance(rollout, torch.Tensor):
            return torch.where(batch.response_mask, rollout - 0.001, 0.0)
        return [[x - 0.001 for x in row] for row in rollout]

    def update(self, batch) -> dict[str, float]:
        return {"timing/update_s": 0.0}


class BenchFleet(Fleet):
    """The real Fleet.per_token / Fleet.update over fake learner ranks; engines return prepared
    completions."""

    def __init__(self, cfg: Config, completions: list[list[Completion]], ranks: int) -> None:
        self.cfg, self.restarts, self._closed = cfg, 0, False
        self._learner_lock = threading.RLock()
        self.learner = FakeLearners(ranks)
        self._completions = completions

    def generate(self, prompts, spec):
        return self._completions[: len(prompts)]

    def release_engines(self) -> None:
        pass

    def sync_weights(self) -> None:
        pass

    def peak_memory(self) -> dict[str, float]:
        return {}


def completions(prompts: int, n: int, length: int, seed: int = 0) -> list[list[Completion]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(prompts):
        group = []
        for j in range(n):
            ids = torch.randint(3, 49000, (length - j % 2,), generator=g).tolist()  # lengths differ by one
            lps = (-torch.rand(len(ids), generator=g) * 3).tolist()  # float32 values as python floats
            group.append(Completion(ids, lps, "length" if j % 2 == 0 else "stop"))
        out.append(group)
    return out


def recipe(name: str, samples: int, length: int, ranks: int) -> Config:
    cfg = Config()
    cfg.trainer.prompts_per_step, cfg.rollout.n = samples // 8, 8
    cfg.rollout.max_new_tokens = length
    cfg.trainer.eval_every = 0
    cfg.learner.mini_batches = 2
    cfg.resources.learner.num_workers = ranks
    a = cfg.algorithm
    if name == "grpo":
        a.advantage, a.kl_coef, a.kl_in = "grpo", 0.001, "loss"
    else:
        a.advantage, a.kl_coef, a.kl_in, a.kl_estimator = "gae", 0.01, "reward", "k1"
    return cfg


class Timers:
    """Wraps module functions to time them by name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, owner: Any, attr: str, label: str) -> None:
        fn = getattr(owner, attr)

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - t0

        setattr(owner, attr, timed)


def instrument() -> Timers:
    """Time the controller's phases (once per process: the wrappers stay)."""
    timers = Timers()
    timers.wrap(collect, "generate_single_turn" if hasattr(collect, "generate_single_turn") else "generate", "build batch")
    timers.wrap(collect, "episode_scores", "reward")
    timers.wrap(Fleet, "per_token", "per_token (shard, gather)")
    timers.wrap(step_mod, "logprob_diff", "logprob_diff")
    timers.wrap(step_mod, "add_advantages", "advantages")
    timers.wrap(Fleet, "update", "update (shard)")
    return timers


def run_recipe(name: str, args, timers: Timers) -> dict[str, float]:
    cfg = recipe(name, args.samples, args.length, args.ranks)
    comps = completions(cfg.trainer.prompts_per_step, cfg.rollout.n, args.length)
    totals: dict[str, list[float]] = {}
    for rep in range(args.repeats + 1):  # the first is a warm-up
        timers.seconds = {}
        fleet = BenchFleet(cfg, comps, args.ranks)
        tok = FakeTokenizer()
        source = BatchSource(fleet, tok, IsSeven(), Prompts(), cfg)
        t0 = time.perf_counter()
        _, batch = step_mod.rl_step(1, fleet, source, tok, IsSeven(), Prompts(), cfg)
        t1 = time.perf_counter()
        step_mod.sample_rows(batch, tok, cfg.trainer.samples_per_step)
        t2 = time.perf_counter()
        worker = fleet.learner.worker_s  # the fake workers' own time is not the controller's
        seconds = dict(timers.seconds)
        seconds["per_token (shard, gather)"] -= worker.get("per_token", 0.0)
        seconds["update (shard)"] -= worker.get("update", 0.0)
        seconds["sample_rows"] = t2 - t1
        seconds["total (rl_step + sample_rows)"] = t2 - t0 - sum(worker.values())
        if rep:
            for k, v in seconds.items():
                totals.setdefault(k, []).append(v)
    return {k: statistics.median(v) for k, v in totals.items()}


def learner_prep(args) -> float:
    """One learner rank's input preparation for its shard (ppo recipe: every per-token field):
    micro-batches padded, then each micro-batch's per-token fields as [B, R] tensors."""
    import socket

    import torch.distributed as dist

    from parkrl.workers.learner import Learner

    if not dist.is_initialized():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    cfg = recipe("ppo", args.samples, args.length, args.ranks)
    captured = {}

    class Capture(FakeLearners):
        def update(self, batch):
            captured.setdefault("shard", batch)
            return {}

    fleet = BenchFleet(cfg, completions(cfg.trainer.prompts_per_step, cfg.rollout.n, args.length), args.ranks)
    fleet.learner = Capture(args.ranks)
    tok = FakeTokenizer()
    step_mod.rl_step(1, fleet, BatchSource(fleet, tok, IsSeven(), Prompts(), cfg), tok, IsSeven(), Prompts(), cfg)
    shard = captured["shard"]
    learner = Learner.__new__(Learner)
    learner.cfg, learner.pad_id, learner.device = cfg, 0, torch.device("cpu")
    fields = ("old_logprobs", "ref_logprobs", "advantages", "values", "returns")
    times = []
    for _ in range(args.repeats + 1):
        t0 = time.perf_counter()
        for rows, mb in learner._micro_batches(shard):
            if hasattr(mb, "rows_of"):  # rows of [N, T] tensors
                [mb.rows_of(shard.rollout_logprobs, rows)] + [mb.rows_of(shard[f], rows) for f in fields]
            else:  # ragged lists padded per micro-batch
                [mb.pad_rows([shard.rollout_logprobs[i] for i in rows])] + [
                    mb.pad_rows([shard[f][i] for i in rows]) for f in fields]
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=64, help="samples per step (groups of 8)")
    ap.add_argument("--length", type=int, default=1024, help="response tokens per sample")
    ap.add_argument("--ranks", type=int, default=2, help="learner ranks the batch is sharded over")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"{args.samples} samples x {args.length} tokens, {args.ranks} learner ranks; median of {args.repeats} "
          f"(ms per step)")
    timers = instrument()
    for name in ("grpo", "ppo"):
        result = run_recipe(name, args, timers)
        print(f"\n[{name}]")
        for k, v in result.items():
            print(f"  {k:32s} {1000 * v:9.1f}")
    print(f"\n[learner rank input prep, ppo fields, one shard]  {1000 * learner_prep(args):9.1f}")


if __name__ == "__main__":
    main()
