"""Batch inference (parkrl.infer / parkrl.eval): same output as a direct engine call, every row
exactly once across a rerun, an engine actor lost mid-job replaced, bad input caught before any
actor starts, and the pass@k estimator."""
from __future__ import annotations

import json
import shutil
from math import comb
from pathlib import Path

import pytest

from parkrl.config import ConfigError

ROWS = [{"question": f"What is {a} + {b}?", "answer": str(a + b)} for a, b in ((1, 2), (3, 4), (5, 1), (2, 2), (7, 1))]


def infer_config(model_dir: str, tmp_path: Path, **overrides):
    from parkrl.api import compose

    data = tmp_path / "rows.jsonl"
    if not data.exists():
        data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    base = {
        "model.path": model_dir, "rollout.dtype": "float32", "rollout.max_new_tokens": 6, "rollout.max_model_len": 256,
        "rollout.kv_cache_gib": 0.125, "rollout.temperature": 1.0, "resources.rollout.cpus_per_worker": 1,
        "reward.cls": "custom_reward.ShortText", "infer.input": str(data), "infer.output": str(tmp_path / "out"),
        "infer.batch_size": 2, "infer.n": 2, "trainer.worker_timeout_s": 300, "trainer.sync_timeout_s": 60,
        **overrides,
    }
    return compose("grpo", [f"{k}={v}" for k, v in base.items()])


def row_keys(out: Path) -> list[tuple[int, int]]:
    from parkrl.inference.pipeline import read_output

    return [(r["row_id"], r["sample"]) for r in read_output(out)]


# ---- pure ----------------------------------------------------------------------------------
def test_pass_at_k_by_hand():
    from parkrl.inference.metrics import eval_metrics, ks_for, pass_at_k

    assert pass_at_k(4, 0, 1) == 0.0 and pass_at_k(4, 4, 3) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(8, 3, 4) == pytest.approx(1 - comb(5, 4) / comb(8, 4))  # 1 - 5/70
    assert pass_at_k(3, 1, 3) == 1.0  # n - c < k: every draw holds the correct one
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    assert ks_for(8) == [1, 2, 4, 8] and ks_for(6) == [1, 2, 4, 6] and ks_for(1) == [1]
    rows = [{"row_id": i, "sample": j, "correct": c, "reward": float(c)}
            for i, cs in enumerate([[1, 0, 0, 0], [1, 1, 0, 0]]) for j, c in enumerate(cs)]
    m = eval_metrics([rows[:4], rows[4:]])
    assert m["pass@1"] == pytest.approx((0.25 + 0.5) / 2)
    assert m["pass@2"] == pytest.approx(((1 - 3 / 6) + (1 - 1 / 6)) / 2)
    assert m["pass@4"] == 1.0 and m["mean@4"] == pytest.approx(0.375)


def no_cluster(monkeypatch) -> None:
    """Starting (or joining) a Ray cluster fails the test: what it checks happens before."""
    from parkrl.workers import cluster

    def refuse(cfg):
        raise AssertionError("a Ray cluster was started")

    monkeypatch.setattr(cluster, "ray_cluster", refuse)


def test_bad_input_named_before_any_actor(tiny_model_dir, tmp_path, monkeypatch):
    from parkrl.inference.pipeline import run_infer

    no_cluster(monkeypatch)

    cases = [
        ({"infer.input": str(tmp_path / "missing.jsonl")}, "infer.input="),
        ({"infer.output": ""}, "infer.output:"),
        ({"model.path": str(tmp_path / "no-model")}, "model.path="),
        ({"infer.format": "csv"}, "infer.format="),
        ({"infer.n": 0}, "infer.n=0"),
        ({"filter.min_pass": 0.5, "filter.max_pass": 0.4}, "filter.min_pass=0.5"),
        ({"sample.keep": "some"}, "sample.keep="),
    ]
    (tmp_path / "a-file").write_text("")
    bad = tmp_path / "bad-row.jsonl"  # row 4 of 6 lacks its answer: found by the check pass, before any actor
    bad.write_text("".join(json.dumps(r if i != 3 else {"question": "q"}) + "\n" for i, r in enumerate(ROWS + ROWS[:1])))
    cases.append(({"infer.input": str(bad)}, f"{bad}:4: missing field"))
    cases.append(({"infer.output": str(tmp_path / "a-file")}, "infer.output="))
    for overrides, key in cases:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            run_infer(infer_config(tiny_model_dir, tmp_path, **overrides))


def test_rerun_with_other_settings_is_refused(tiny_model_dir, tmp_path):
    from parkrl.inference.pipeline import MANIFEST, run_infer

    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST).write_text(json.dumps({"batch_size": 3}))
    with pytest.raises(ConfigError, match="other settings"):
        run_infer(infer_config(tiny_model_dir, tmp_path))


# ---- with engines (Ray) ----------------------------------------------------------------------
@pytest.mark.integration
def test_eval_output_equals_a_direct_engine_call(tiny_model_dir, tmp_path, ray_session):
    """Seeded sampling (temperature 1, n=2), rows in batches of 2: the same completions as one
    direct EngineWorker.generate call on all rows; eval.json holds pass@k of those rows."""
    from parkrl.engines import SamplingSpec
    from parkrl.eval import evaluate
    from parkrl.inference.metrics import eval_metrics
    from parkrl.inference.pipeline import read_output
    from parkrl.models import chat_prompt_ids, load_tokenizer
    from parkrl.workers.engine import EngineWorker

    cfg = infer_config(tiny_model_dir, tmp_path, **{"trainer.seed": 7, "eval.n": 2})
    metrics = evaluate(cfg)
    rows = read_output(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").glob("shard-*")) == [f"shard-00000{k}.parquet" for k in range(3)]
    assert [(r["row_id"], r["sample"]) for r in rows] == [(i, j) for i in range(5) for j in range(2)]
    assert json.loads((tmp_path / "out" / "eval.json").read_text()) == metrics == eval_metrics([rows[i:i + 2] for i in range(0, 10, 2)])

    tok = load_tokenizer(tiny_model_dir)
    prompts = [chat_prompt_ids(tok, [{"role": "system", "content": cfg.data.system_prompt},
                                     {"role": "user", "content": r["question"]}]) for r in ROWS]
    worker = ray_session.remote(EngineWorker).options(num_cpus=1).remote(cfg, tiny_model_dir, 0)
    try:
        spec = SamplingSpec(n=2, max_new_tokens=6, temperature=1.0, seed=7, logprobs=False)
        groups = ray_session.get(worker.generate.remote(prompts, spec), timeout=300)
        ray_session.get(worker.shutdown.remote(), timeout=60)
    finally:
        ray_session.kill(worker)
    direct = [tok.decode(c.token_ids, skip_special_tokens=True) for g in groups for c in g]
    assert [r["completion"] for r in rows] == direct
    assert [r["completion_tokens"] for r in rows] == [len(c.token_ids) for g in groups for c in g]
    assert len(set(direct)) > 2  # sampled, not one repeated text


@pytest.mark.integration
def test_rerun_writes_every_row_exactly_once(tiny_model_dir, tmp_path, ray_session):
    """A job killed part way leaves some shards (and maybe a half-written temporary file); the
    rerun writes the missing shards only: every (row, sample) exactly once."""
    from parkrl.inference.pipeline import run_infer

    cfg = infer_config(tiny_model_dir, tmp_path, **{"infer.format": "jsonl", "infer.batch_size": 1, "infer.n": 1})
    first = run_infer(cfg)
    out = first.output
    assert first.written_rows == 5 and row_keys(out) == [(i, 0) for i in range(5)]
    before = {p.name: (p.stat().st_mtime_ns, p.read_text()) for p in out.glob("shard-*")}
    for k in (1, 3):  # as if the job had been killed before these were written
        (out / f"shard-00000{k}.jsonl").unlink()
    (out / ".shard-000003.jsonl.tmp-99999").write_text('{"row_id": 3, "sample": 0}\n')  # half written
    second = run_infer(cfg)
    assert (second.written_rows, second.skipped_shards) == (2, 3)
    assert row_keys(out) == [(i, 0) for i in range(5)]
    after = {p.name: (p.stat().st_mtime_ns, p.read_text()) for p in out.glob("shard-*")}
    assert {k: after[k] for k in ("shard-000000.jsonl", "shard-000002.jsonl", "shard-000004.jsonl")} == \
        {k: before[k] for k in ("shard-000000.jsonl", "shard-000002.jsonl", "shard-000004.jsonl")}  # untouched
    assert {k: v[1] for k, v in after.items()} == {k: v[1] for k, v in before.items()}  # rewritten: same text
    assert not list(out.glob(".shard-*"))
    assert run_infer(cfg).written_rows == 0  # complete: nothing to do


@pytest.mark.integration
def test_job_killed_with_sigkill_then_rerun_writes_every_row_once(tiny_model_dir, tmp_path, ray_session):
    """`python -m parkrl.infer` SIGKILLed (its whole process group) once its first shards are
    written; the same command's rerun completes it: every (row, sample) exactly once."""
    import os
    import signal
    import subprocess
    import sys
    import tempfile
    import time

    from conftest import session_processes

    from parkrl.inference.pipeline import run_infer

    data = tmp_path / "many.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n" for i in range(24)))
    args = {"infer.input": str(data), "infer.batch_size": 1, "infer.n": 2, "infer.format": "jsonl"}
    cfg = infer_config(tiny_model_dir, tmp_path, **args)
    out = tmp_path / "out"
    tmp = Path(tempfile.mkdtemp(prefix="pk", dir="/tmp"))  # the killed job's Ray temp dir; short socket paths
    env = {**os.environ, "TMPDIR": str(tmp), "RAY_AUTH_MODE": "disabled",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    overrides = {"model.path": tiny_model_dir, "rollout.dtype": "float32", "rollout.max_new_tokens": 6,
                 "rollout.max_model_len": 256, "rollout.kv_cache_gib": 0.125, "resources.rollout.cpus_per_worker": 1,
                 "reward.cls": "custom_reward.ShortText", "infer.output": str(out), **args}
    proc = subprocess.Popen([sys.executable, "-m", "parkrl.infer", *[f"{k}={v}" for k, v in overrides.items()]],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and not list(out.glob("shard-*")) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        deadline = time.monotonic() + 60  # Ray's daemons of the killed job go on their own
        while session_processes(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        shutil.rmtree(tmp, ignore_errors=True)
    written = len(list(out.glob("shard-*")))
    assert 1 <= written < 24
    summary = run_infer(cfg)
    assert (summary.skipped_shards, summary.written_rows) == (written, 24 - written)
    assert row_keys(out) == [(i, j) for i in range(24) for j in range(2)]


@pytest.mark.integration
def test_engine_actor_killed_mid_job_is_replaced(tiny_model_dir, tmp_path, ray_session, monkeypatch):
    """The engine actor's process exits during its first batch (test hook); Ray restarts it,
    the batch is retried on the new engine and the job completes, every row once."""
    from parkrl.inference import pipeline

    marker = tmp_path / "engine-died"
    monkeypatch.setattr(pipeline, "_TEST_DIE_ONCE", str(marker))
    cfg = infer_config(tiny_model_dir, tmp_path, **{"infer.batch_size": 2, "infer.n": 1})
    summary = pipeline.run_infer(cfg)
    assert marker.exists()  # it did die
    assert summary.written_rows == 5
    assert row_keys(tmp_path / "out") == [(i, 0) for i in range(5)]


def test_filter_and_sample_pick_from_scored_samples(tiny_model_dir, tmp_path, monkeypatch):
    """On a complete output directory (no engine needed: every shard is there), filter keeps the
    rows whose pass rate is in [min_pass, max_pass] and sample writes the chosen conversations."""
    from parkrl.data.files import write_jsonl
    from parkrl.inference.pipeline import MANIFEST
    from parkrl.inference.select import filter_prompts, sample_sft

    no_cluster(monkeypatch)  # nothing to generate
    n, correct = 4, [[1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 1], [0, 1, 0, 0]]
    cfg = infer_config(tiny_model_dir, tmp_path, **{"infer.format": "jsonl", "infer.batch_size": 2, "filter.n": n,
                                                    "filter.min_pass": 0.1, "filter.max_pass": 0.9, "sample.n": n})
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST).write_text(json.dumps({
        "input": f"infer.input={cfg.infer.input!r}", "rows": 5, "batch_size": 2, "n": n, "format": "jsonl",
        "model": tiny_model_dir, "seed": 0}))
    messages = lambda i: [{"role": "system", "content": cfg.data.system_prompt},  # noqa: E731
                          {"role": "user", "content": ROWS[i]["question"]}]
    rows = [{"row_id": i, "sample": j, "messages": messages(i), "completion": f"row {i} sample {j}",
             "reward": c + j / 10, "correct": bool(c)} for i, cs in enumerate(correct) for j, c in enumerate(cs)]
    for k in range(3):
        write_jsonl(out / f"shard-00000{k}.jsonl", [r for r in rows if r["row_id"] // 2 == k])

    kept = [json.loads(line) for line in filter_prompts(cfg).read_text().splitlines()]
    assert [(r["question"], r["pass_rate"]) for r in kept] == [(ROWS[1]["question"], 0.25), (ROWS[3]["question"], 0.75),
                                                               (ROWS[4]["question"], 0.25)]
    assert kept[0]["answer"] == ROWS[1]["answer"] and kept[0]["messages"] == messages(1)  # a data.train_file row

    sft = [json.loads(line) for line in sample_sft(cfg).read_text().splitlines()]
    assert [(r["row_id"], r["sample"]) for r in sft] == [(i, j) for i, cs in enumerate(correct) for j, c in enumerate(cs) if c]
    assert sft[0]["messages"] == [*messages(0), {"role": "assistant", "content": "row 0 sample 0"}]
    cfg.sample.keep = "best"
    best = [json.loads(line) for line in sample_sft(cfg).read_text().splitlines()]
    assert [(r["row_id"], r["sample"]) for r in best] == [(0, 3), (1, 0), (2, 3), (3, 3), (4, 1)]


def test_cli_bad_input_exits_2_naming_the_key(tiny_model_dir, tmp_path):
    import subprocess
    import sys

    for module in ("parkrl.infer", "parkrl.eval"):
        proc = subprocess.run([sys.executable, "-m", module, f"model.path={tiny_model_dir}", "reward.cls=custom_reward.ShortText",
                               f"infer.input={tmp_path / 'missing.jsonl'}", f"infer.output={tmp_path / 'out'}"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("parkrl: error: infer.input=")
        assert not (tmp_path / "out").exists()
