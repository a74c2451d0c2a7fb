"""Run by tests/test_multinode.py in its own process: a two-node Ray cluster on this machine
(two raylets with distinct custom resources, a private temp dir), the learner placed on one node
and the rollout engine on the other by config, then update + weight sync across the nodes.
Prints one JSON line with what the test checks."""
import json
import os
import sys

import ray
import torch
from ray.cluster_utils import Cluster
from test_integration import tiny_config

from parkrl.algorithms import ADVANTAGES
from parkrl.collect import generate_single_turn
from parkrl.data import TaskPrompts
from parkrl.engines import SamplingSpec
from parkrl.models import load_tokenizer
from parkrl.step import logprob_diff
from parkrl.workers.cluster import worker_env
from parkrl.workers.fleet import Fleet


def main(model_dir: str, out_dir: str) -> None:
    os.makedirs(os.path.join(os.environ["RAY_TMPDIR"], "ray"), exist_ok=True)  # the test's private temp dir
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "resources": {"learner_node": 1}, "include_dashboard": False})
    rollout_node = cluster.add_node(num_cpus=2, resources={"rollout_node": 1})
    ray.init(address=cluster.address, runtime_env={"env_vars": worker_env()}, log_to_driver=False)
    cfg = tiny_config(model_dir, out_dir)
    cfg.resources.learner.num_workers = 1
    cfg.resources.learner.custom_resources = {"learner_node": 1}
    cfg.resources.rollout.custom_resources = {"rollout_node": 1}
    tok = load_tokenizer(model_dir)
    data = TaskPrompts(cfg.data, 0)
    spec = SamplingSpec(n=4, max_new_tokens=12, temperature=1.0, seed=1)
    fleet = Fleet(cfg, model_dir)
    try:
        def batch():
            b = generate_single_turn(fleet, tok, data.next_prompts(4), spec)
            b.add("advantages", ADVANTAGES.get("grpo")(torch.arange(len(b), dtype=torch.float32) % 3,
                                                       torch.tensor(b.group_ids), cfg.algorithm))
            return b

        fleet.update(batch())
        stale = logprob_diff(fleet.per_token(b := batch(), "policy"), b)  # engine not synced yet
        fleet.sync_weights()  # crosses from the learner's node to the engine's
        synced = logprob_diff(fleet.per_token(b := batch(), "policy"), b)
        result = {"learner_nodes": fleet.learner.node_ids(), "rollout_nodes": fleet.engines.node_ids(),
                  "rollout_node_id": rollout_node.node_id, "head_node_id": cluster.head_node.node_id,
                  "stale": stale, "synced": synced}
    finally:
        fleet.shutdown()
        ray.shutdown()
        cluster.shutdown()
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
