"""Run by tests/test_chaos.py in its own process: fixed node-loss scenarios on a Ray cluster of
raylets on this machine, with the machinery of scripts/chaos.py (cluster, elastic config,
summary). Prints one JSON line with what the test checks.

    python tests/chaos_run.py MODEL_DIR OUT_DIR engines   # 3 engines; kill 2 engine nodes, add 1
    python tests/chaos_run.py MODEL_DIR OUT_DIR learner   # kill the learner's node; trainer.max_restarts=1
    python tests/chaos_run.py MODEL_DIR OUT_DIR preempt   # SIGTERM to an engine: it drains at the step boundary
"""
import json
import sys
import time
from pathlib import Path

import ray

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from chaos import ENGINE_NODE, chaos_config, start_cluster, summary  # noqa: E402

from parkrl.controller import train  # noqa: E402
from parkrl.runs import console  # noqa: E402
from parkrl.workers import fleet as fleet_module  # noqa: E402

STEPS = 8


def run(cluster, cfg, hook) -> str:
    fleet_module._CHAOS_HOOK = hook
    try:
        with console.capture():  # as the command line runs it: train.log is written
            return str(train(cfg))
    finally:
        fleet_module._CHAOS_HOOK = None
        ray.shutdown()
        cluster.shutdown()


def engines_scenario(model_dir: str, out_dir: str) -> dict:
    """3 engines, min 1, max 3, 8 steps: the node of one engine is killed (no notice) while it
    generates (step 2), a new node is added (step 3; the lost slot's placement group moves there
    and its new engine joins at a step boundary), and once the fleet is back to 3 the node of
    another engine is killed while the weights are sent to it."""
    cluster = start_cluster(3)
    cfg = chaos_config(model_dir, out_dir, STEPS, engines=3)
    faults: list[dict] = []
    generates = {"n": 0}

    def kill(fleet, slot: int, phase: str) -> None:
        faults.append({"phase": phase, "slot": slot, "t": time.monotonic()})
        cluster.remove_node(next(n for n in cluster.worker_nodes if n.node_id == fleet.nodes[slot]),
                            allow_graceful=False)

    def hook(phase: str, fleet) -> None:
        if phase == "generate":
            generates["n"] += 1
            if generates["n"] == 2:  # step 2, mid-generation
                kill(fleet, fleet.live[-1], "generate")
            elif generates["n"] == 3:  # capacity comes back
                cluster.add_node(**ENGINE_NODE)
            elif generates["n"] >= 4 and fleet.joining:  # steps take ~1 s here: let a starting engine come up
                ray.wait(list(fleet.joining.values()), num_returns=len(fleet.joining), timeout=120)
        elif phase == "sync" and len(fleet.live) == 3 and len(faults) == 1 and fleet.joined_total:
            kill(fleet, fleet.live[0], "sync")

    return summary(cfg, run(cluster, cfg, hook), faults)


def learner_scenario(model_dir: str, out_dir: str) -> dict:
    """The learner's node is killed in step 3 (a new one joins at once); trainer.max_restarts=1
    starts the workers again from the step-2 checkpoint and the run ends at step 4."""
    cluster = start_cluster(1, learner_node=False, head_cpus=1)
    learner_node = cluster.add_node(num_cpus=1, resources={"learner_node": 1})
    cfg = chaos_config(model_dir, out_dir, 4, engines=1)
    cfg.trainer.save_every, cfg.trainer.max_restarts = 1, 1
    cfg.trainer.worker_timeout_s = 120
    faults: list[dict] = []
    generates = {"n": 0}

    def hook(phase: str, fleet) -> None:
        if phase == "generate":
            generates["n"] += 1
            if generates["n"] == 3:  # step 3: the learner's node vanishes, another joins
                faults.append({"phase": "generate", "t": time.monotonic()})
                cluster.remove_node(learner_node, allow_graceful=False)
                cluster.add_node(num_cpus=1, resources={"learner_node": 1})

    return summary(cfg, run(cluster, cfg, hook), faults)


def preempt_scenario(model_dir: str, out_dir: str) -> dict:
    """3 engines, 4 steps: engine 1's process gets SIGTERM (a preemption notice) while it generates
    in step 2; the step finishes with all three and engine 1 leaves at the step boundary."""
    import os
    import signal

    cluster = start_cluster(3)
    cfg = chaos_config(model_dir, out_dir, 4, engines=3)
    faults: list[dict] = []
    generates = {"n": 0}

    def hook(phase: str, fleet) -> None:
        if phase == "generate":
            generates["n"] += 1
            if generates["n"] == 2:
                pid = ray.get(fleet.engines.workers[1].__ray_call__.remote(lambda self: os.getpid()))
                faults.append({"phase": "generate", "slot": 1, "t": time.monotonic()})
                os.kill(pid, signal.SIGTERM)

    return summary(cfg, run(cluster, cfg, hook), faults)


if __name__ == "__main__":
    scenarios = {"engines": engines_scenario, "learner": learner_scenario, "preempt": preempt_scenario}
    result = scenarios[sys.argv[3]](sys.argv[1], sys.argv[2])
    print(json.dumps(result))
