"""What a run shows: metrics.jsonl continued on resume, ETA in the progress line, TensorBoard
and offline W&B beside it, PNG plots, and the same metrics for the same seed."""
import json
import re
import sys

import pytest

from parkrl.plot import main as plot_main
from parkrl.runs.metrics import LogprobDiffRange, MetricsWriter, progress_line


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


@pytest.mark.parametrize("rollout, learner, normal, abnormal", [
    ("float32", "float32", 8e-6, 0.06),  # fp32: ~1e-6..1e-5; one skipped sync gave > 0.05
    ("bfloat16", "bfloat16", 0.045, 0.2),  # bf16: 0.006-0.045 per token with the same weights
    ("bfloat16", "float32", 0.03, 0.2),  # bf16 on either side: bf16's range
])
def test_lp_diff_is_flagged_only_when_abnormal_for_the_dtypes(tmp_path, capsys, rollout, learner, normal, abnormal):
    import torch

    expect = LogprobDiffRange(getattr(torch, rollout), getattr(torch, learner))  # as resolve_dtype returns them
    row = {"step": 2, "rollout/logprob_diff": normal}
    assert progress_line(row, 5, lp_diff=expect) == f"step 2/5 | lp_diff {normal:.2e}"
    assert expect.warning(row) is None
    bad_row = {"step": 3, "rollout/logprob_diff": abnormal}
    assert progress_line(bad_row, 5, lp_diff=expect) == f"step 3/5 | lp_diff {abnormal:.2e} (!)"
    w = MetricsWriter(tmp_path, 5, lp_diff=expect)
    w.log(2, {"rollout/logprob_diff": normal})
    w.log(3, {"rollout/logprob_diff": abnormal})
    w.close()
    out, err = capsys.readouterr()
    assert f"lp_diff {normal:.2e} |" in out and f"lp_diff {abnormal:.2e} (!)" in out
    assert err.count("warning") == 1 and "[parkrl] warning: step 3: rollout/logprob_diff" in err
    low, high = (1e-6, 1e-5) if {rollout, learner} == {"float32"} else (0.006, 0.045)
    assert f"normally {low:g}-{high:g}" in err and f"rollout {rollout}, learner {learner}" in err


def test_lp_diff_is_not_flagged_one_step_off_where_the_learner_is_ahead():
    expect = LogprobDiffRange("float32", "float32", one_step_off=True)
    assert "(!)" not in progress_line({"step": 3, "rollout/logprob_diff": 0.08}, 5, lp_diff=expect)


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
    from test_integration import read_metrics, tiny_config

    from parkrl.controller import train

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


# ---- the console and train.log ----------------------------------------------------------------
WORKER = "\x1b[36m(EngineWorker pid=16216)\x1b[0m "
NOISE_LINES = [
    "2026-11-30 08:29:39,174\tINFO worker.py:2038 -- Started a local Ray instance.",
    WORKER + "INFO 11-30 08:33:50 [api_utils.py:286] non-default args: {'dtype': 'bfloat16'}",
    ("\x1b[36m(FSDPLearner pid=16217)\x1b[0m Loading weights:   0%|          | 0/20 [00:00<?, ?it/s]"
     "\rLoading weights: 100%|##########| 20/20 [00:00<00:00, 23045.63it/s]"),
    WORKER + "Loading safetensors checkpoint shards:   0% Completed | 0/1 [00:00<?, ?it/s]",
    WORKER + "Attempted to load weight layers.0.mlp.down_proj.weight with dtype torch.float32 into parameter "
             "with dtype torch.bfloat16",
    WORKER + "CPU backend doesn't allow to use `torch.set_num_threads` after the thread binding, skip it.",
    WORKER + "libtcmalloc is not found in LD_PRELOAD. For best performance, please follow the section",
    WORKER + "/x/.venv/lib/python3.11/site-packages/vllm/triton_utils/dispatcher.py:138: FutureWarning: "
             "`torch.distributed.reduce_op` is deprecated",
    WORKER + "  if hasattr(value, \"__dict__\"):",
    "\x1b[36m(FSDPLearner pid=16217)\x1b[0m Writing model shards: 100%|##########| 1/1 [00:00<00:00, 17.32it/s]",
    WORKER,
    "[2026-11-30 11:57:30,148 E 31342 31550] core_worker.cc:2465: Actor with class name: 'MapWorker(MapBatches("
    "PromptIds))' and ID: '57621b30f66bb3964d72f63201000000' has constructor arguments in the object store and "
    "max_restarts > 0. If the arguments in the object store go out of scope or are lost, the actor restart will fail.",
    "2026-11-30 11:57:30,221\tWARNING __init__.py:28 -- Progress bars disabled. To enable, set "
    "`ray.data.DataContext.get_current().enable_progress_bars = True`.",
    # parkrl.infer's engines run in Ray Data actors, whose names nest parentheses
    "\x1b[36m(MapWorker(MapBatches(Generate)) pid=4567)\x1b[0m Attempted to load weight lm_head.weight with dtype "
    "torch.float32 into parameter with dtype torch.bfloat16",
]
SHOWN_LINES = [
    "[parkrl] model /tmp/tiny | 45 train / 4 eval questions",
    WORKER + "Attempted to load weight lm_head.weight with dtype torch.bfloat16 into parameter with dtype torch.int8",
    WORKER + "RuntimeError: the engine ran out of KV cache",
    "/home/me/my_reward.py:3: DeprecationWarning: my own code's warning",
    "  the source line of a warning in the user's code",
]


def test_console_drops_third_party_noise_and_train_log_gets_what_is_shown(tmp_path, capsys):
    from parkrl.runs import console

    with console.capture():
        print("[parkrl] before the output directory exists", flush=True)
        for line in NOISE_LINES + SHOWN_LINES:
            print(line, file=sys.stderr)
        console.attach(tmp_path / "train.log")
        print("step 1/1 | reward 0.720 | lp_diff 9.45e-04")
        print(NOISE_LINES[4], file=sys.stderr)
        print("parkrl: error: reward function Raises raised", file=sys.stderr, flush=True)
    out, err = capsys.readouterr()
    assert out == "[parkrl] before the output directory exists\nstep 1/1 | reward 0.720 | lp_diff 9.45e-04\n"
    assert err.splitlines() == SHOWN_LINES + ["parkrl: error: reward function Raises raised"]
    plain = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in SHOWN_LINES]
    assert (tmp_path / "train.log").read_text().splitlines() == [
        "[parkrl] before the output directory exists", *plain, "step 1/1 | reward 0.720 | lp_diff 9.45e-04",
        "parkrl: error: reward function Raises raised"]
    assert not isinstance(sys.stdout, console._Tee) and not isinstance(sys.stderr, console._Tee)  # restored


def test_verbose_shows_everything(tmp_path, capsys):
    from parkrl.runs import console

    with console.capture():
        console.set_verbose(True)
        console.attach(tmp_path / "train.log")
        for line in NOISE_LINES:
            print(line, file=sys.stderr)
    err = capsys.readouterr().err
    assert "Started a local Ray instance" in err and "Attempted to load weight" in err and "Loading weights" in err
    assert len((tmp_path / "train.log").read_text().splitlines()) > len(NOISE_LINES)  # the \r bar update too


def test_a_run_outside_the_cli_writes_no_train_log(tmp_path):
    from parkrl.runs import console

    console.attach(tmp_path / "train.log")  # no capture(): train() called from Python, pytest's capture in charge
    assert not (tmp_path / "train.log").exists()


def test_cli_train_log_holds_the_progress_lines_and_the_final_error(tmp_path, tiny_model_dir):
    """A one-process run whose reward raises in step 2: train.log has what the console showed,
    from the first [parkrl] line through step 1's progress line to `parkrl: error:`."""
    from test_bad_input import cli, tiny_run

    (tmp_path / "late_reward.py").write_text(
        "from parkrl import RewardFunction\n\n"
        "class RaisesInStep2(RewardFunction):\n"
        "    calls = 0\n"
        "    def __call__(self, completions, messages, samples):\n"
        "        RaisesInStep2.calls += 1\n"
        "        if RaisesInStep2.calls == 2:\n"
        "            raise ValueError('no score for step 2')\n"
        "        return [float(len(c) % 2) for c in completions]\n")
    out = tmp_path / "out"
    args = [a for a in tiny_run(tiny_model_dir, out) if not a.startswith(("reward.cls=", "trainer.total_steps="))]
    run = cli(tmp_path, *args, "reward.cls=late_reward.RaisesInStep2", "trainer.total_steps=2")
    assert run.code == 4, run.stderr[-3000:]
    log = (out / "train.log").read_text().splitlines()
    assert log[0].startswith("[parkrl] model ")
    assert any(line.startswith("step 1/2 | reward") for line in log)
    assert log[-1] == run.last_line and log[-1].startswith("parkrl: error: reward function RaisesInStep2 raised")
    shown = run.stdout.splitlines() + run.stderr.splitlines()
    assert sorted(shown) == sorted(log)  # every line shown is logged, and nothing else


@pytest.mark.integration
def test_cli_ray_run_shows_no_third_party_noise_and_logs_worker_lines(tmp_path, tiny_model_dir):
    """recipe=grpo's set-up on Ray with a bf16 vLLM engine and a float32 checkpoint: the console
    has parkrl's lines and nothing of vLLM's start-up (its per-tensor fp32 -> bf16 cast warnings,
    progress bars, thread-binding remarks); a worker's own print reaches console and train.log."""
    from test_bad_input import cli

    (tmp_path / "chatty_reward.py").write_text(
        "from parkrl import RewardFunction\n\n"
        "class Chatty(RewardFunction):\n"
        "    def __call__(self, completions, messages, samples):\n"
        "        return [float(len(c) % 2) for c in completions]\n")
    (tmp_path / "chatty_imports.py").write_text("print('[user] imported in a worker', flush=True)\n")
    out = tmp_path / "out"
    run = cli(tmp_path, f"model.path={tiny_model_dir}", "trainer.total_steps=1", "trainer.eval_every=0",
              "trainer.prompts_per_step=2", "rollout.n=2", "rollout.max_new_tokens=4", "rollout.dtype=bfloat16",
              "learner.dtype=bfloat16", "data.eval_size=4", "data.train_size=50", "reward.cls=chatty_reward.Chatty",
              "trainer.imports=[chatty_imports]", "trainer.save_final=true", "trainer.save_final_checkpoint=false",
              f"trainer.output_dir={out}")
    assert run.code == 0, run.stderr[-3000:]
    shown = run.stdout.splitlines() + run.stderr.splitlines()
    for noise in ("Attempted to load weight", "Loading weights", "Writing model shards", "torch.set_num_threads",
                  "INFO", "LD_PRELOAD", "FutureWarning"):
        assert not any(noise in line for line in shown), (noise, shown)
    log = (out / "train.log").read_text().splitlines()
    assert any(line.startswith("step 1/1 | reward") for line in log)
    assert any("[user] imported in a worker" in line for line in log)  # forwarded by Ray from a worker
    assert sorted(re.sub(r"\x1b\[[0-9;]*m", "", line) for line in shown) == sorted(log)


def test_lines_printed_under_a_live_progress_bar_show_above_it_and_are_logged(tmp_path, capsys):
    from parkrl.runs import console
    from parkrl.runs.metrics import ProgressBar

    with console.capture():
        console.attach(tmp_path / "train.log")
        bar = ProgressBar(3, 0)  # what a terminal gets: rich draws on the real stdout, not through the log
        print("[parkrl] warning: something", file=sys.stderr)
        print(NOISE_LINES[4], file=sys.stderr)
        bar.update(1, "step 1/3 | reward 0.500")
        bar.close()
    out = capsys.readouterr().out
    assert "[parkrl] warning: something" in out and "step 1/3 | reward 0.500" in out and "Attempted" not in out
    assert (tmp_path / "train.log").read_text().splitlines() == ["[parkrl] warning: something", "step 1/3 | reward 0.500"]


def test_a_progress_bar_in_the_driver_leaves_no_blank_lines(tmp_path, capsys):
    from parkrl.runs import console

    with console.capture():
        console.attach(tmp_path / "train.log")
        for done in range(3):  # what tqdm writes: "\r" and the redrawn bar, a newline at the end
            sys.stderr.write(f"\rLoading weights: {done * 50}%|#   | {done}/2 [00:00<?, ?it/s]")
        sys.stderr.write("\n")
        print("a line\r\nanother")
        print()  # an empty line of your own stays
    out, err = capsys.readouterr()
    assert err == "" and out == "a line\nanother\n\n"
    assert (tmp_path / "train.log").read_text() == "a line\nanother\n\n"
