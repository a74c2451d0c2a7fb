"""parkrl against TRL's GRPOTrainer on one workload, in one session, on this machine.

    .venv/bin/python scripts/bench_vs_trl.py                  # 25 steps each (about 35 min on 2 cores)
    .venv/bin/python scripts/bench_vs_trl.py --steps 3 --skip-eval    # a quick look

Workload (both): SmolLM2-135M-Instruct in fp32; reasoning-gym chain_sum, 2 terms of 1 digit;
per step 8 prompts x 8 samples, at most 32 new tokens, temperature 1.0; lr 1e-5 constant, no KL;
the system prompt asks for only the final number; reward 1 when the last integer of the
completion is the answer. Both train on the same prompts in the same order (exported from
parkrl's sampler). TRL runs in its own venv (`.venv-trl`, made here on first use: TRL is not
a parkrl dependency), in one process with 2 torch threads. Afterwards one greedy evaluator
(HF generate, `scripts/trl_side/greedy_eval.py`) scores the base model and both trained models
on the same held-out questions. Prints the median seconds per step with phase times, the
reward curves, and the learning comparison; writes everything to OUT/results.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIDE = ROOT / "scripts" / "trl_side"
TRL_PINS = ["torch==2.13.0", "trl==1.16.0", "transformers==5.24.*"]


def side_venv(path: Path) -> Path:
    """A venv with TRL (torch first, so pip keeps the CPU build)."""
    python = path / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        for pins in (TRL_PINS[:1], TRL_PINS):
            subprocess.run([str(python), "-m", "pip", "install", "-q", *pins], check=True)
    return python


def parkrl_config(steps: int, out: Path, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from parkrl.train import CONF_DIR, to_config

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return to_config(compose(config_name="parkrl", overrides=[
            "recipe=grpo", f"trainer.total_steps={steps}", f"trainer.eval_every={steps}", "learner.lr=1e-5",
            "trainer.save_every=0", f"trainer.output_dir={out}", *overrides]))


def export_prompts(cfg, steps: int, out: Path) -> tuple[Path, Path]:
    """parkrl's training prompts for `steps` steps, in its order, and its held-out set, as JSONL."""
    from parkrl.data import TaskPrompts

    data = TaskPrompts(cfg.data, shuffle_seed=cfg.trainer.seed)
    train, held_out = out / "train.jsonl", out / "eval.jsonl"
    with open(train, "w") as f:
        for _ in range(steps):
            for s in data.next_prompts(cfg.trainer.prompts_per_step):
                f.write(json.dumps({"messages": s["messages"], "answer": s["answer"]}) + "\n")
    with open(held_out, "w") as f:
        for s in data.eval:
            f.write(json.dumps({"messages": s["messages"], "answer": s["answer"]}) + "\n")
    return train, held_out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--out", default="")
    ap.add_argument("--trl-venv", default=str(ROOT / ".venv-trl"))
    ap.add_argument("--trl-bf16-steps", type=int, default=1, help="also time TRL in bf16 for this many steps (0: skip)")
    ap.add_argument("--trl-bf16-timeout", type=int, default=600,
                    help="give the bf16 run this many seconds (bf16 matmuls crawl on CPUs without AVX512-BF16/AMX)")
    ap.add_argument("--skip-eval", action="store_true")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for parkrl (its fastest settings)")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="parkrl-vs-trl-"))
    out.mkdir(parents=True, exist_ok=True)
    trl_python = side_venv(Path(args.trl_venv))

    from parkrl.controller import train
    from parkrl.models import resolve_model_path

    cfg = parkrl_config(args.steps, out / "parkrl", args.overrides)
    model_dir = resolve_model_path(cfg.model.path, cfg.model.cache_dir)
    train_file, eval_file = export_prompts(cfg, args.steps, out)

    t0 = time.monotonic()
    train(cfg)
    parkrl_wall = time.monotonic() - t0
    shutil.rmtree(out / "parkrl" / "checkpoints", ignore_errors=True)  # 1.7 GB; final/ is what gets evaluated
    rows = [json.loads(line) for line in open(out / "parkrl" / "metrics.jsonl")]
    p_steps = [r for r in rows if r["step"] > 0]

    def run_trl(name: str, steps: int, *flags: str, timeout: float | None = None) -> tuple[list[dict], list[float], float]:
        """TRL's steps, rewards and wall time; steps and rewards are empty if it ran past `timeout`."""
        d = out / name
        d.mkdir(exist_ok=True)
        t = time.monotonic()
        try:
            subprocess.run([str(trl_python), str(SIDE / "grpo_trl.py"), "--model", model_dir, "--train", str(train_file),
                            "--steps", str(steps), "--out", str(d), *flags], check=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return [], [], time.monotonic() - t
        steps_rows = [json.loads(line) for line in open(d / "steps.jsonl")]
        return steps_rows, json.load(open(d / "rewards.json")), time.monotonic() - t

    trl_rows, trl_rewards, trl_wall = run_trl("trl", args.steps)
    bf16 = run_trl("trl_bf16", args.trl_bf16_steps, "--bf16", timeout=args.trl_bf16_timeout) if args.trl_bf16_steps else None

    evals = {}
    if not args.skip_eval:
        for name, path in (("base", model_dir), ("parkrl", out / "parkrl" / "final"), ("trl", out / "trl" / "final")):
            res = subprocess.run([str(trl_python), str(SIDE / "greedy_eval.py"), str(path), str(eval_file)],
                                 check=True, capture_output=True, text=True)
            evals[name] = json.loads(res.stdout.strip().splitlines()[-1])["accuracy"]

    med = statistics.median
    p_rewards = [r["reward/mean"] for r in p_steps]
    tail = slice(max(0, args.steps - 5), args.steps)
    result = {
        "date": str(date.today()), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "steps": args.steps,
        "parkrl": {"median_step_s": med(r["timing/step_s"] for r in p_steps),
                   "median_generate_s": med(r.get("timing/generate_s", 0.0) for r in p_steps),
                   "median_update_s": med(r["timing/update_s"] for r in p_steps),
                   "median_sync_s": med(r["timing/sync_s"] for r in p_steps),
                   "median_sync_share": med(r["timing/sync_s"] / r["timing/step_s"] for r in p_steps),
                   "peak_rss_gib": {role: max(r[f"memory/{role}_peak_gib"] for r in p_steps) for role in ("learner", "rollout")},
                   "rewards": p_rewards, "reward_last5": statistics.mean(p_rewards[tail]), "wall_s": parkrl_wall,
                   "eval_accuracy_own": [r["eval/accuracy"] for r in rows if "eval/accuracy" in r]},
        "trl": {"median_step_s": med(r["step_s"] for r in trl_rows),
                "median_generate_s": med(r["generate_s"] for r in trl_rows),
                "rewards": trl_rewards, "reward_last5": statistics.mean(trl_rewards[tail]), "wall_s": trl_wall,
                "peak_rss_gib": json.load(open(out / "trl" / "memory.json"))["peak_rss_gib"]},
        "trl_bf16": None if bf16 is None else (
            {"median_step_s": med(r["step_s"] for r in bf16[0]), "steps": len(bf16[0])} if bf16[0]
            else {"timed_out_s": args.trl_bf16_timeout, "steps": 0}),
        "greedy_eval": evals,
        "overrides": args.overrides,
    }
    result["speedup"] = result["trl"]["median_step_s"] / result["parkrl"]["median_step_s"]
    (out / "results.json").write_text(json.dumps(result, indent=2))

    p, t = result["parkrl"], result["trl"]
    print(f"\n## parkrl vs TRL GRPO ({result['date']}, {result['machine']}, {args.steps} steps each)")
    print("| | parkrl | TRL 1.16 (fp32) |\n|---|---|---|")
    print(f"| median s/step | {p['median_step_s']:.1f} | {t['median_step_s']:.1f} |")
    print(f"| generate s (median) | {p['median_generate_s']:.1f} | {t['median_generate_s']:.1f} |")
    print(f"| update s (median) | {p['median_update_s']:.1f} | {t['median_step_s'] - t['median_generate_s']:.1f} (rest of the step) |")
    print(f"| sync s (median) | {p['median_sync_s']:.2f} ({100 * p['median_sync_share']:.1f}% of the step) | — (same process) |")
    mem = p["peak_rss_gib"]
    print(f"| peak RSS GiB | learner {mem['learner']:.2f} + rollout {mem['rollout']:.2f} | {t['peak_rss_gib']:.2f} (one process) |")
    print(f"| reward, mean of steps {tail.start + 1}-{args.steps} | {p['reward_last5']:.3f} | {t['reward_last5']:.3f} |")
    if evals:
        print(f"| greedy held-out accuracy after training (base {evals['base']:.2f}) | {evals['parkrl']:.2f} | {evals['trl']:.2f} |")
    print(f"| wall time of the run s | {p['wall_s']:.0f} | {t['wall_s']:.0f} |")
    if result["trl_bf16"] and result["trl_bf16"]["steps"]:
        print(f"\nTRL in bf16: median {result['trl_bf16']['median_step_s']:.1f} s/step over {result['trl_bf16']['steps']} steps")
    elif result["trl_bf16"]:
        print(f"\nTRL in bf16: no step finished within {args.trl_bf16_timeout} s (stopped there)")
    print(f"\nspeedup (TRL median step / parkrl median step): {result['speedup']:.2f}x")
    print("reward per step:")
    print("step  parkrl  TRL")
    for i in range(args.steps):
        print(f"{i + 1:4d}  {p['rewards'][i]:.3f}   {t['rewards'][i] if i < len(t['rewards']) else float('nan'):.3f}")
    print(f"results: {out / 'results.json'}")


if __name__ == "__main__":
    main()
