"""Multi-node placement on one machine: two raylets (Ray's cluster utilities, a private temp
dir, never `ray stop`), the learner on one node and the engine on the other by
`resources.<role>.custom_resources`, and the weight sync crossing between them."""
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


def test_roles_placed_on_different_nodes_sync_across_them(tiny_model_dir, tmp_path):
    tests = Path(__file__).parent
    ray_tmp = tempfile.mkdtemp(prefix="pkmn-")  # short: Ray's socket paths must fit in 107 bytes
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests), os.environ.get("PYTHONPATH", "")]),
           "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": ray_tmp}
    try:
        proc = subprocess.run([sys.executable, str(tests / "multinode_run.py"), tiny_model_dir, str(tmp_path / "run")],
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["learner_nodes"] == [r["head_node_id"]] and r["rollout_nodes"] == [r["rollout_node_id"]]
    assert r["head_node_id"] != r["rollout_node_id"]
    assert r["stale"] > 50 * SYNC_OK  # the update changed the policy ...
    assert r["synced"] < SYNC_OK  # ... and the sync carried it to the other node
