"""`python -m parkrl.plot RUN_DIR`: PNG curves of a run from its metrics.jsonl.

Writes RUN_DIR/plots/{reward,eval_accuracy,kl,response_length,tool_use,timings}.png and overview.png
(all panels on one page). Panels whose metrics the run did not log (KL with kl_coef=0, tool use
in single-turn runs) say so.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PANELS = {  # file name: (title, [(metric, label)], y label)
    "reward": ("Train reward", [("reward/mean", "mean over drawn samples"), ("reward/trained_mean", "trained batch")], "reward"),
    "eval_accuracy": ("Held-out eval accuracy (greedy)", [("eval/accuracy", "accuracy")], "accuracy"),
    "kl": ("KL to the reference policy", [("kl/ref", "KL")], "nats / token"),
    "response_length": ("Response length", [("response/length_mean", "mean tokens")], "tokens"),
    "tool_use": ("Multi-turn tool use", [("env/tool_call_rate", "episodes calling a tool"),
                                          ("eval/tool_call_rate", "eval episodes calling a tool")], "fraction"),
    "timings": ("Time per phase", [("timing/generate_s", "generate"), ("timing/reward_s", "reward"),
                                   ("timing/logprobs_s", "logprobs"), ("timing/update_s", "update"),
                                   ("timing/sync_s", "sync"), ("timing/eval_s", "eval"),
                                   ("timing/step_s", "whole step")], "seconds"),
}


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; give the trainer.output_dir of a parkrl run")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
    return rows


def _draw(ax, rows: list[dict], title: str, series: list[tuple[str, str]], ylabel: str) -> None:
    drawn = False
    for key, label in series:
        points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o" if len(points) < 30 else None, markersize=3, label=label)
            drawn = True
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "not logged in this run", ha="center", va="center", transform=ax.transAxes, color="gray")


def plot_run(run_dir: Path) -> list[Path]:
    """Write the PNGs for `run_dir`; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    out = Path(run_dir) / "plots"
    out.mkdir(exist_ok=True)
    written = []
    for name, (title, series, ylabel) in PANELS.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        _draw(ax, rows, title, series, ylabel)
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=110)
        plt.close(fig)
        written.append(out / f"{name}.png")
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))
    for ax, (title, series, ylabel) in zip(axes.flat, PANELS.values()):
        _draw(ax, rows, title, series, ylabel)
    fig.suptitle(f"parkrl run {Path(run_dir).resolve().name}")
    fig.tight_layout()
    fig.savefig(out / "overview.png", dpi=100)
    plt.close(fig)
    return written + [out / "overview.png"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parkrl.plot", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run's trainer.output_dir (holds metrics.jsonl)")
    args = parser.parse_args(argv)
    try:
        paths = plot_run(args.run_dir)
    except (FileNotFoundError, ValueError) as e:
        print(f"parkrl.plot: {e}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
