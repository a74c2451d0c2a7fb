"""Benchmark micro-batching on a batch of very different lengths: one learner update of the same
samples padded three ways, on the real FSDP2 learner (1 rank, this process).

    .venv/bin/python scripts/bench_microbatch.py [--samples 16] [--longest 200] [--budget 1024]

1. whole batch padded to its longest sample (one pass: what a framework without
   micro-batching does),
2. sorted by length, fixed `learner.micro_batch_size` = 8 samples per pass (parkrl's default),
3. sorted, sized by token budget (`learner.max_tokens_per_micro_batch`).
Prints wall time, computed (padded) tokens and the speedup over 1. All three give the same
gradient (tests/test_learner.py).
"""
from __future__ import annotations

import argparse
import time

import torch

from parkrl.batch import TrajectoryBatch
from parkrl.config import Config
from parkrl.models import resolve_model_path
from parkrl.workers.fsdp_learner import FSDPLearner
from parkrl.workers.microbatch import padded_tokens, plan_micro_batches


def varied_batch(n: int, longest: int, seed: int = 0) -> TrajectoryBatch:
    """Prompts of 20-60 tokens, responses from 4 to `longest` tokens (log-uniform: many short, few long)."""
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(3, 49000, (int(torch.randint(20, 61, (1,), generator=g)),), generator=g).tolist()
               for _ in range(n)]
    lengths = torch.exp(torch.empty(n).uniform_(torch.log(torch.tensor(4.0)).item(), torch.log(torch.tensor(float(longest))).item(),
                                                generator=g)).long().tolist()
    responses = [torch.randint(3, 49000, (L,), generator=g).tolist() for L in lengths]
    batch = TrajectoryBatch.from_lists(prompts, responses, [[1] * len(r) for r in responses],
                                       [[-1.0] * len(r) for r in responses], [i // 8 for i in range(n)], [{}] * n,
                                       ["stop"] * n)
    batch.add("advantages", torch.randn(n, generator=g))
    return batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--longest", type=int, default=200, help="longest response in tokens")
    ap.add_argument("--budget", type=int, default=1024, help="learner.max_tokens_per_micro_batch for mode 3")
    args = ap.parse_args()
    model = resolve_model_path("smollm2-135m-instruct")
    batch = varied_batch(args.samples, args.longest)
    lengths = [len(p) + r for p, r in zip(batch.prompt_ids, batch.response_lengths.tolist())]
    modes = [("whole batch padded", args.samples, 0), ("sorted, 8 per pass", 8, 0),
             (f"sorted, {args.budget}-token budget", args.samples, args.budget)]
    cfg = Config()
    cfg.learner.dtype, cfg.learner.lr = "float32", 0.0  # lr 0: every mode updates the same weights
    cfg.resources.learner.cpus_per_worker = torch.get_num_threads()
    learner = FSDPLearner(cfg, model, rank=0, world_size=1)
    learner.setup(*learner.free_address())
    cfg.learner.micro_batch_size = 8
    learner.update(batch)  # warm-up
    results = []
    for name, size, budget in modes:
        cfg.learner.micro_batch_size, cfg.learner.max_tokens_per_micro_batch = size, budget
        t0 = time.perf_counter()
        learner.update(batch)
        seconds = time.perf_counter() - t0
        plan = plan_micro_batches(lengths, size, budget)
        results.append((name, seconds, len(plan), padded_tokens(lengths, plan)))
    learner.shutdown()
    base = results[0][1]
    print(f"\n{args.samples} samples, {sum(lengths)} real tokens (lengths {min(lengths)}-{max(lengths)})")
    print("| mode | passes | computed tokens | update s | speedup |")
    print("|---|---|---|---|---|")
    for name, seconds, passes, tokens in results:
        print(f"| {name} | {passes} | {tokens} | {seconds:.1f} | {base / seconds:.2f}x |")


if __name__ == "__main__":
    main()
