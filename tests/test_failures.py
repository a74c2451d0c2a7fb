"""Failures on real Ray actors: a dead rollout engine (its actor killed, or only vLLM's engine
core child process, as on GPU) is restarted and re-synced mid-run, a dead learner ends the run
with a resume hint and `resume=auto` finishes it, a hung actor is named within the timeout, and
SIGINT checkpoints and leaves no process or /dev/shm entry behind."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
from conftest import session_processes
from multiprocess_engine import MultiprocessEngineWorker
from test_integration import SYNC_OK, read_metrics, tiny_config

from parkrl.config import RoleResources
from parkrl.controller import train
from parkrl.workers import WorkerDied, WorkerGroup, WorkerTimeout

pytestmark = pytest.mark.integration


def kill_actor(group: WorkerGroup, rank: int) -> None:
    import ray

    ray.kill(group.workers[rank], no_restart=True)


def engine_core_killer(out_dir: Path) -> Callable[[WorkerGroup, int], None]:
    """A `kill` that SIGKILLs only the vLLM engine core child process of a MultiprocessEngineWorker
    (its pid in `out_dir`): the actor lives on and would raise EngineDeadError."""
    def kill(group: WorkerGroup, rank: int) -> None:
        os.kill(int((out_dir / f"engine_core_{rank}.pid").read_text()), signal.SIGKILL)

    return kill


def kill_on_call(monkeypatch, method: str, call_number: int, role: str, rank: int = 0, kill=kill_actor) -> None:
    """Patch WorkerGroup.submit_each so that the `call_number`-th `method` call on `role` kills
    worker `rank` (`kill(group, rank)`) right after the call was sent: it dies mid-call."""
    original = WorkerGroup.submit_each
    calls = []

    def submit_each(self, name, args, ranks=None):
        pending = original(self, name, args, ranks)
        if self.role == role and name == method:
            calls.append(1)
            if len(calls) == call_number:
                kill(self, rank)
        return pending

    monkeypatch.setattr(WorkerGroup, "submit_each", submit_each)


@pytest.mark.parametrize("engine_death", ["actor", "engine_core"])
def test_dead_rollout_engines_are_restarted_and_dead_learner_resumes(engine_death, tiny_model_dir, tmp_path, ray_session,
                                                                      monkeypatch):
    cfg = tiny_config(tiny_model_dir, str(tmp_path / "run"), trainer__total_steps=5, trainer__save_every=2,
                      trainer__eval_every=0, trainer__save_final=False, trainer__worker_timeout_s=120,
                      trainer__sync_timeout_s=20)
    cfg.resources.learner.num_workers = 1
    cfg.resources.rollout.num_workers = 2
    kill = kill_actor
    if engine_death == "engine_core":
        monkeypatch.setattr("parkrl.workers.fleet.EngineWorker", MultiprocessEngineWorker)
        kill = engine_core_killer(tmp_path / "run")
        cfg.trainer.worker_timeout_s = 300  # two engine core processes start side by side on 2 cores (50-60 s each)
    # receive_weights calls: #1 step 1's sync, #2 the re-sync after the restart below, #3 step 2's, #4 step 3's.
    kill_on_call(monkeypatch, "generate", 2, "rollout", rank=0, kill=kill)  # engine 0 dies during step 2's generation
    kill_on_call(monkeypatch, "receive_weights", 4, "rollout", rank=1, kill=kill)  # engine 1 dies during step 3's sync
    kill_on_call(monkeypatch, "update", 5, "learner")  # the learner dies during step 5's update
    with pytest.raises(WorkerDied) as failure:
        train(cfg)
    message = str(failure.value) + "".join(getattr(failure.value, "__notes__", []))
    assert "learner[0].update: the worker died" in message
    assert "step_000004" in message and "trainer.resume=auto" in message
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["workers/restarts"] for r in rows] == [0, 1, 2, 2]
    # Each step's engines held the learner's current weights: both restarts were re-synced.
    assert all(r["rollout/logprob_diff"] < SYNC_OK for r in rows)

    monkeypatch.undo()
    train(cfg)  # trainer.resume=auto (the default)
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]  # step 5 run from the step-4 checkpoint
    assert rows[4]["rollout/logprob_diff"] < SYNC_OK
    assert rows[4]["workers/restarts"] == 2  # the restart budget carries over


class Napper:
    def nap(self, seconds: float) -> str:
        time.sleep(seconds)
        return "awake"

    def shutdown(self) -> None:
        pass


def test_hung_ray_actor_is_named_within_the_timeout(ray_session):
    group = WorkerGroup("napper", Napper, RoleResources(num_workers=1, cpus_per_worker=0.1), "ray", 3.0,
                        lambda rank: ())
    try:
        t0 = time.monotonic()
        with pytest.raises(WorkerTimeout, match=r"napper\[0\]\.nap did not finish within 3 s"):
            group.call("nap", 60.0)
        assert time.monotonic() - t0 < 6.0
    finally:
        with pytest.raises(WorkerTimeout, match=r"napper\[0\]\.shutdown"):  # still napping: named, then killed
            group.shutdown(timeout_s=1.0)


def test_sigint_checkpoints_and_leaves_no_process_or_shared_memory(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    shm_before = set(os.listdir("/dev/shm"))
    cmd = [sys.executable, "-m", "parkrl.train", "recipe=grpo", f"model.path={tiny_model_dir}",
           "reward.cls=custom_reward.ShortText", "trainer.total_steps=50", "trainer.save_every=0",
           "trainer.eval_every=0", "trainer.prompts_per_step=2", "rollout.n=4", "rollout.max_new_tokens=8",
           "rollout.kv_cache_gib=0.25", "learner.dtype=float32", "rollout.dtype=float32",
           "data.eval_size=4", "data.train_size=50", f"trainer.output_dir={out}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    # Its own session, like a terminal job: Ctrl-C reaches the whole foreground process group.
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 400
        while proc.poll() is None and time.monotonic() < deadline:
            if (out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text().strip():
                break
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, output[-3000:]
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    assert f"stopped by SIGINT after step {last}" in output
    assert (out / "checkpoints" / f"step_{last:06d}" / "trainer_state.json").is_file()
    assert last < 50
    deadline = time.monotonic() + 30  # Ray's own daemons exit asynchronously after shutdown
    while session_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert session_processes(proc.pid) == []
    leaked = set(os.listdir("/dev/shm")) - shm_before
    assert not leaked, leaked
