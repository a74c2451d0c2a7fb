"""What a run shows: metrics.jsonl continued on resume, ETA in the progress line, TensorBoard
and offline W&B beside it, PNG plots, and the same metrics for the same seed."""
import json

import pytest

from parkrl.metrics import MetricsWriter, progress_line
from parkrl.plot import main as plot_main


def test_metrics_writer_continues_after_the_resumed_step(tmp_path):
    w = MetricsWriter(tmp_path, 10)
    for step in range(1, 6):
        w.log(step, {"reward/mean": step / 10})
        w.log_samples(step, [{"completion": f"c{step}"}])
    w.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "reward/me')  # torn by a SIGKILL mid-write
    w = MetricsWriter(tmp_path, 10, start_step=3)  # resumed from the step-3 checkpoint
    w.log(4, {"reward/mean": 0.99})
    w.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["reward/mean"]) for r in rows] == [(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.99)]
    samples = [json.loads(line)["step"] for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert samples == [1, 2, 3]


def test_progress_line_shows_key_metrics_and_eta():
    row = {"step": 3, "reward/mean": 0.4104, "loss/policy": 0.0012, "timing/step_s": 31.04, "eval/accuracy": None}
    assert progress_line(row, 25, eta_s=662.0) == "step 3/25 | reward 0.410 | loss +0.0012 | step 31.0s | eta 11m02s"
    assert "eta" not in progress_line({**row, "step": 25}, 25, eta_s=0.0)


def test_nonfinite_values_are_logged_as_null(tmp_path):
    w = MetricsWriter(tmp_path, 1)
    w.log(1, {"loss/policy": float("nan"), "reward/mean": 0.5})
    w.close()
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 1, "loss/policy": None, "reward/mean": 0.5}


def test_tensorboard_and_offline_wandb_receive_the_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    w = MetricsWriter(tmp_path, 3, loggers=["tensorboard", "wandb"], config={"learner": {"lr": 1e-5}})
    for step in (1, 2, 3):
        w.log(step, {"reward/mean": step / 4, "loss/policy": None if step == 2 else 0.1})
    w.close()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("reward/mean")] == [(1, 0.25), (2, 0.5), (3, 0.75)]
    assert [e.step for e in events.Scalars("loss/policy")] == [1, 3]  # null values are not sent
    offline = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == 1 and offline[0].stat().st_size > 0


def test_plot_writes_a_png_per_curve(tmp_path, capsys):
    rows = [{"step": 0, "eval/accuracy": 0.4, "timing/eval_s": 9.0}]
    rows += [{"step": s, "reward/mean": 0.1 * s, "response/length_mean": 20 - s, "timing/generate_s": 9.0,
              "timing/update_s": 25.0, "timing/sync_s": 1.2, "timing/step_s": 36.0} for s in range(1, 6)]
    rows[-1]["eval/accuracy"] = 0.6
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert plot_main([str(tmp_path)]) == 0
    names = {"reward", "eval_accuracy", "kl", "response_length", "tool_use", "timings", "overview"}
    for name in names:
        png = (tmp_path / "plots" / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert capsys.readouterr().out.count(".png") == len(names)


def test_plot_names_the_missing_file(tmp_path, capsys):
    assert plot_main([str(tmp_path / "nothing")]) == 2
    assert "nothing/metrics.jsonl: no such file" in capsys.readouterr().err


@pytest.mark.integration
def test_same_seed_gives_the_same_metrics(tiny_model_dir, tmp_path):
    from parkrl.controller import train
    from test_integration import read_metrics, tiny_config

    runs = []
    for name in ("a", "b"):
        cfg = tiny_config(tiny_model_dir, str(tmp_path / name), trainer__runtime="local", rollout__backend="hf",
                          trainer__total_steps=3, trainer__eval_every=3, trainer__save_final=False,
                          learner__mini_batches=2)
        cfg.resources.learner.num_workers = 1
        runs.append(read_metrics(train(cfg)))
    machine = ("timing/", "perf/", "memory/")
    strip = [[{k: v for k, v in r.items() if not k.startswith(machine)} for r in rows] for rows in runs]
    assert strip[0] == strip[1]
    assert len(strip[0]) == 4 and strip[0][1]["learner/grad_norm"] != strip[0][2]["learner/grad_norm"]
