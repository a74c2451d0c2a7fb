"""Node loss on one machine (ray.cluster_utils.Cluster in its own process, tests/chaos_run.py):
an elastic rollout fleet keeps training while engine nodes vanish and grows back when a node
joins; no step is lost or repeated and the data stream is exactly where a fault-free run's is."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from test_integration import SYNC_OK

pytestmark = pytest.mark.integration
TESTS = Path(__file__).parent


def run_scenario(name: str, model_dir: str, out: Path, timeout_s: int = 900) -> dict:
    ray_tmp = tempfile.mkdtemp(prefix="pkch-")  # short: Ray's socket paths must fit in 107 bytes
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": ray_tmp}
    try:
        proc = subprocess.run([sys.executable, str(TESTS / "chaos_run.py"), model_dir, str(out), name], env=env,
                              cwd=out.parent, capture_output=True, text=True, timeout=timeout_s)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_engine_nodes_lost_mid_generation_and_mid_sync_and_one_joining(tiny_model_dir, tmp_path):
    r = run_scenario("engines", tiny_model_dir, tmp_path / "run")
    assert r["steps"] == list(range(1, 9))  # the run completed, every step once
    assert [f["phase"] for f in r["faults"]] == ["generate", "sync"]  # both faults were injected
    assert r["trained_prompts"] == r["expected_prompts"]  # each step trained its own prompts: none lost or repeated
    assert r["alive"][0] == 3 and min(r["alive"]) == 2 and 3 in r["alive"][1:]  # shrank, grew back, ...
    assert sum(r["lost"]) == 2 and sum(r["joined"]) >= 1 and r["alive"][-1] == 2  # ... and shrank again
    assert all(d < SYNC_OK for d in r["logprob_diff"]), r["logprob_diff"]  # engines on the learner's weights throughout
    assert r["log"].count("[parkrl] event: rollout[") >= 3 and "is gone" in r["log"]


def test_the_learner_node_lost_restarts_the_workers_from_the_checkpoint(tiny_model_dir, tmp_path):
    r = run_scenario("learner", tiny_model_dir, tmp_path / "run")
    assert len(r["faults"]) == 1
    assert r["steps"] == [1, 2, 3, 4]  # step 3 redone after the restart, logged once
    assert r["trained_prompts"] == r["expected_prompts"]  # the data stream resumed exactly
    assert "restarting them from" in r["log"] and "1/1 of trainer.max_restarts" in r["log"]


def test_a_preemption_notice_drains_the_engine_at_the_step_boundary(tiny_model_dir, tmp_path):
    r = run_scenario("preempt", tiny_model_dir, tmp_path / "run")
    assert r["steps"] == [1, 2, 3, 4] and r["trained_prompts"] == r["expected_prompts"]
    assert r["alive"] == [3, 2, 2, 2] and r["lost"] == [0, 1, 0, 0]  # step 2 finished with it, then it left
    assert "rollout[1] lost (a preemption notice (SIGTERM): drained at the step boundary on node" in r["log"]
    assert "joined" not in r["log"]  # nothing new started on the node that is going away
