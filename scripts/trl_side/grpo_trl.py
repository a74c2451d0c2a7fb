"""TRL's GRPOTrainer on the side-by-side workload (run by scripts/bench_vs_trl.py in its own
venv: TRL is not a parkrl dependency). Reads the prompts parkrl would train on, in parkrl's
order, and writes one JSON line per step (seconds, generation seconds, reward) and the final model.

    python grpo_trl.py --model DIR --train train.jsonl --steps 25 --out OUT [--bf16]
"""
from __future__ import annotations

import argparse
import json
import re
import resource
import time

import torch


def last_int_reward(completions, answer, **_) -> list[float]:
    """1.0 when the completion's last integer equals the answer, else 0.0."""
    out = []
    for c, a in zip(completions, answer):
        text = c[-1]["content"] if isinstance(c, list) else c
        found = re.findall(r"-?\d+", text)
        out.append(float(bool(found) and found[-1] == str(a).strip()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--out", required=True)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    rows = [json.loads(line) for line in open(args.train)]
    data = Dataset.from_list([{"prompt": r["messages"], "answer": r["answer"]} for r in rows])
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16 if args.bf16 else torch.float32)
    config = GRPOConfig(
        output_dir=args.out, max_steps=args.steps, learning_rate=1e-5, lr_scheduler_type="constant",
        beta=0.0, num_generations=8, per_device_train_batch_size=64, gradient_accumulation_steps=1,
        max_completion_length=32, temperature=1.0, bf16=args.bf16, use_cpu=True, shuffle_dataset=False,
        logging_steps=1, save_strategy="no", report_to=[], seed=0, dataloader_num_workers=0,
        gradient_checkpointing=False,  # its fastest setting here: memory is not the limit
    )
    log = open(f"{args.out}/steps.jsonl", "w")
    timing = {"generate_s": 0.0}

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0, timing["generate_s"] = time.perf_counter(), 0.0

        def on_log(self, _args, state, _control, logs=None, **k):
            if logs and "reward" in logs:
                self.reward = logs["reward"]

        def on_step_end(self, _args, state, *a, **k):
            log.write(json.dumps({"step": state.global_step, "step_s": time.perf_counter() - self.t0,
                                  "generate_s": timing["generate_s"]}) + "\n")
            log.flush()

    trainer = GRPOTrainer(model=model, reward_funcs=last_int_reward, args=config, train_dataset=data,
                          processing_class=tok, callbacks=[StepTimer()])
    generate = trainer._generate

    def timed_generate(*a, **k):  # HF generate (and its decoding) inside each step
        t0 = time.perf_counter()
        try:
            return generate(*a, **k)
        finally:
            timing["generate_s"] += time.perf_counter() - t0

    trainer._generate = timed_generate
    trainer.train()
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    with open(f"{args.out}/rewards.json", "w") as f:
        json.dump(rewards, f)
    with open(f"{args.out}/memory.json", "w") as f:  # ru_maxrss is in KiB on Linux
        json.dump({"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)}, f)
    trainer.save_model(f"{args.out}/final")
    tok.save_pretrained(f"{args.out}/final")


if __name__ == "__main__":
    main()
