"""Random node loss during a training run, on one machine: the figures for docs/operating.md.

    .venv/bin/python scripts/chaos.py [--steps 20] [--engines 3] [--fault-rate 0.3] [--seed 0] [--model PATH]

A Ray cluster of raylets on this machine (ray.cluster_utils.Cluster: a head for the learner and
the driver, one node per engine, Ray's node health checks at 1 s x 3), an elastic rollout fleet
(resources.rollout num_workers=min..max: `--engines`, min_workers=1), HF engines on a tiny
random-init Llama (default; `--model` for a real checkpoint). At every generate and weight sync
a fault strikes with probability `--fault-rate` while more than one engine lives: the node of a
random engine is killed (no notice, as a vanished spot node). A killed node is replaced by a new
one a step later (capacity returning), whose engine joins at a step boundary. At the end it
prints: faults injected and survived, steps lost or repeated (must be 0), whether every step
trained the prompts a fault-free run would, the median fault-free step time, the engine start
time (from its slot's placement to joining), and the time each fault cost (its step's time minus
the median). Run it alone on the
machine. tests/test_chaos.py runs fixed scenarios of the same machinery (tests/chaos_run.py).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENGINE_NODE = {"num_cpus": 1, "resources": {"engine_node": 1}}
# A killed node is declared dead after health_check_failure_threshold missed checks (Ray's
# defaults: 3 s x 5); a run on spot capacity may tune them too (docs/operating.md).
HEALTH_CHECKS = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}


def start_cluster(engine_nodes: int, learner_node: bool = True, head_cpus: int = 2):
    """A head (the driver; the learner when `learner_node`) and `engine_nodes` engine nodes, joined."""
    import ray
    from ray.cluster_utils import Cluster

    from parkrl.workers.cluster import worker_env

    os.makedirs(os.path.join(os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="pkch-")), "ray"),
                exist_ok=True)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    head = {"num_cpus": head_cpus, "include_dashboard": False, "_system_config": HEALTH_CHECKS}
    if learner_node:
        head["resources"] = {"learner_node": 1}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    for _ in range(engine_nodes):
        cluster.add_node(**ENGINE_NODE)
    ray.init(address=cluster.address, runtime_env={"env_vars": worker_env()}, log_to_driver=False)
    return cluster


def chaos_config(model_dir: str, out_dir: str, steps: int, engines: int):
    """A small elastic GRPO run: the learner on the head, `engines` HF engines (min 1) on engine nodes."""
    from parkrl.config import Config

    cfg = Config()
    cfg.model.path = model_dir
    cfg.data.task_args = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
    cfg.data.eval_size, cfg.data.train_size = 8, 200
    cfg.rollout.backend, cfg.rollout.n, cfg.rollout.max_new_tokens, cfg.rollout.dtype = "hf", 4, 12, "float32"
    cfg.learner.dtype, cfg.learner.lr, cfg.learner.micro_batch_size, cfg.learner.mini_batches = "float32", 1e-3, 4, 2
    t = cfg.trainer
    t.prompts_per_step, t.total_steps, t.eval_every, t.output_dir = 4, steps, 0, out_dir
    t.save_final, t.save_final_checkpoint, t.samples_per_step = False, False, 1000  # every trained sample logged
    t.worker_timeout_s, t.sync_timeout_s = 300, 30  # a sync with a vanished engine fails after sync_timeout_s
    r = cfg.resources
    r.learner.num_workers, r.learner.custom_resources = 1, {"learner_node": 1}
    r.rollout.num_workers, r.rollout.min_workers, r.rollout.max_workers = engines, 1, engines
    r.rollout.cpus_per_worker, r.rollout.custom_resources = 1, {"engine_node": 1}
    return cfg


def summary(cfg, out: str, faults: list[dict]) -> dict:
    """What happened, from the run's files: steps, fleet metrics, the prompts each step trained
    against the prompts the data stream gives a fault-free run, and train.log's tail."""
    from parkrl.data import TaskPrompts

    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    trained: dict[int, list[str]] = {}
    for line in open(os.path.join(out, "samples.jsonl")):
        s = json.loads(line)
        trained.setdefault(s["step"], []).append(s["prompt"])
    data = TaskPrompts(cfg.data, cfg.trainer.seed)
    expected = {step: [p["question"] for p in data.next_prompts(cfg.trainer.prompts_per_step)]
                for step in range(1, cfg.trainer.total_steps + 1)}
    log = Path(out, "train.log")
    return {"steps": [r["step"] for r in rows], "faults": faults,
            "alive": [r.get("workers/rollout_alive") for r in rows], "lost": [r.get("workers/lost") for r in rows],
            "joined": [r.get("workers/joined") for r in rows],
            "logprob_diff": [r.get("rollout/logprob_diff") for r in rows],
            "step_s": [r.get("timing/step_s") for r in rows],
            "trained_prompts": {str(k): sorted(set(v)) for k, v in trained.items()},
            "expected_prompts": {str(k): sorted(set(v)) for k, v in expected.items()},
            "log": log.read_text()[-20000:] if log.exists() else ""}


def tiny_model(path: Path) -> str:
    """A 2-layer random-init Llama with SmolLM2's tokenizer (the machinery, not the model, is measured)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from parkrl.models import resolve_model_path

    tok = AutoTokenizer.from_pretrained(resolve_model_path("smollm2-135m-instruct"))
    config = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--engines", type=int, default=3)
    p.add_argument("--fault-rate", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="")
    a = p.parse_args()
    sys.path.insert(0, str(ROOT))
    import ray

    from parkrl.controller import train
    from parkrl.runs import console
    from parkrl.workers import fleet as fleet_module

    work = Path(tempfile.mkdtemp(prefix="parkrl-chaos-"))
    model = a.model or tiny_model(work / "tiny")
    cluster = start_cluster(a.engines)
    cfg = chaos_config(model, str(work / "run"), a.steps, a.engines)
    rng = random.Random(a.seed)
    faults: list[dict] = []
    pending_nodes = {"n": 0}

    def hook(phase: str, fleet) -> None:
        if phase == "generate" and pending_nodes["n"]:  # capacity returns a step after a loss
            for _ in range(pending_nodes["n"]):
                cluster.add_node(**ENGINE_NODE)
            pending_nodes["n"] = 0
        if len(fleet.live) > fleet.min_engines and rng.random() < a.fault_rate:
            slot = rng.choice(fleet.live)
            node = next(n for n in cluster.worker_nodes if n.node_id == fleet.nodes[slot])
            faults.append({"phase": phase, "slot": slot, "t": time.monotonic()})
            cluster.remove_node(node, allow_graceful=False)
            pending_nodes["n"] += 1

    fleet_module._CHAOS_HOOK = hook
    t0 = time.monotonic()
    try:
        with console.capture():
            out = train(cfg)
    finally:
        fleet_module._CHAOS_HOOK = None
        ray.shutdown()
        cluster.shutdown()
    r = summary(cfg, str(out), faults)
    wall = time.monotonic() - t0
    quiet = [s for s, lost in zip(r["step_s"], r["lost"]) if not lost]
    median = statistics.median(quiet)
    cost = [s - median for s, lost in zip(r["step_s"], r["lost"]) if lost]
    missing = sorted(set(range(1, a.steps + 1)) - set(r["steps"]))
    repeated = len(r["steps"]) - len(set(r["steps"]))
    exact = r["trained_prompts"] == r["expected_prompts"]
    starts = [float(x) for x in re.findall(r"joined on node \S+ after ([0-9.]+) s", r["log"])]
    print(f"[chaos] {a.steps} steps, {a.engines} engines (min 1), fault rate {a.fault_rate}, seed {a.seed}; "
          f"{wall:.0f} s in all")
    print(f"[chaos] faults injected {len(faults)} ({sum(f['phase'] == 'generate' for f in faults)} mid-generation, "
          f"{sum(f['phase'] == 'sync' for f in faults)} mid-sync); survived {int(sum(r['lost']))}; engines joined "
          f"{int(sum(r['joined']))}; fleet size per step {[int(x) for x in r['alive']]}")
    print(f"[chaos] steps lost {len(missing)}, repeated {repeated}; every step trained its own prompts: {exact}; "
          f"max rollout/logprob_diff {max(r['logprob_diff']):.2e}")
    print(f"[chaos] step time: median {median:.2f} s without a fault; engine start (node added -> up) "
          f"{', '.join(f'{s:.1f}' for s in starts) or '-'} s; time lost per fault "
          f"{', '.join(f'{c:.1f}' for c in cost) or '-'} s (goal: <= one step + one engine start)")


if __name__ == "__main__":
    main()
