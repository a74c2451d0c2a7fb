"""Benchmark a fixed GRPO workload and print per-phase time, throughput and peak memory per role.

    .venv/bin/python scripts/benchmark.py                       # the default recipe's step shape
    .venv/bin/python scripts/benchmark.py rollout.n=4 resources.learner.num_workers=2

Runs `--steps` steps of `recipe=grpo` with evaluation off (Hydra overrides after the flags),
then reports the median over the steps after the first (the first pays one-time warm-up).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
from datetime import date

from hydra import compose, initialize_config_dir

from parkrl.controller import train
from parkrl.train import CONF_DIR, to_config

PHASES = ["generate", "reward", "logprobs", "update", "sync", "step"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. rollout.n=4")
    args = ap.parse_args()
    out_dir = tempfile.mkdtemp(prefix="parkrl-bench-")
    overrides = ["recipe=grpo", f"trainer.total_steps={args.steps}", "trainer.eval_every=0",
                 "trainer.save_final=false", f"trainer.output_dir={out_dir}", *args.overrides]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = to_config(compose(config_name="parkrl", overrides=overrides))
    train(cfg)
    rows = [json.loads(line) for line in open(os.path.join(out_dir, "metrics.jsonl"))]
    timed = rows[1:] if len(rows) > 1 else rows

    def med(key: str) -> float:
        return statistics.median(r.get(key, 0.0) for r in timed)

    print(f"\n## parkrl benchmark ({date.today()}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{cfg.resources.learner.num_workers} learner rank(s), {cfg.resources.rollout.num_workers} engine(s), "
          f"{cfg.rollout.backend})")
    print(f"workload: {cfg.trainer.prompts_per_step} prompts x {cfg.rollout.n} samples, <= {cfg.rollout.max_new_tokens} "
          f"new tokens, model {cfg.model.path}; median of steps 2..{args.steps}")
    print("| phase | median s |\n|---|---|")
    overlap = ["ahead_generate", "generate_wait"] if any("timing/ahead_generate_s" in r for r in timed) else []
    for phase in [*PHASES[:-1], *overlap, PHASES[-1]]:  # one step off: the generation beside the update, and the wait
        print(f"| {phase} | {med(f'timing/{phase}_s'):.2f} |")
    print(f"\ngeneration: {med('perf/gen_tokens_per_s'):.0f} new tokens/s")
    print(f"training:   {med('perf/train_tokens_per_s'):.0f} tokens/s (prompt + response of the batch per second of update; "
          f"{med('learner/skipped_samples'):.0f} zero-advantage samples skipped)")
    print(f"sync:       {100 * med('timing/sync_s') / med('timing/step_s'):.1f}% of the step")
    print(f"peak RSS:   learner {max(r['memory/learner_peak_gib'] for r in rows):.2f} GiB, "
          f"rollout {max(r['memory/rollout_peak_gib'] for r in rows):.2f} GiB")
    shutil.rmtree(os.path.join(out_dir, "checkpoints"), ignore_errors=True)  # the last step's (1.7 GB): not needed
    print(f"metrics:    {out_dir}/metrics.jsonl")


if __name__ == "__main__":
    main()
