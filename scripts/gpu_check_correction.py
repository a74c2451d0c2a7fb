"""Rollout correction on bf16 CUDA logits (part of scripts/gpu_check.sh; runs on CPU too, slower).

An "engine" samples tokens from bf16 logits (a split-K matmul), a "learner" scores them in fp32 and in bf16 from
the same weights (a SmolLM2-sized head: hidden 576, vocabulary 49152), the way a bf16 GPU run's
two sides disagree. For every `algorithm.rollout_correction` mode it checks on the GPU:

- every weight and `rollout/kl` is finite, TIS weights are <= the cap, mask weights are 0 or in
  the band, and the weights carry no gradient;
- the CUDA result equals the same function on CPU for the same inputs (to bf16-free fp32
  tolerance: the correction itself runs in fp32);
- the measured per-token |logp diff| and k3 for bf16-vs-bf16 and bf16-vs-fp32, the numbers that
  say how much correction a bf16 GPU run gets.

Writes correction.json under --out and exits 1 if a check fails. Needs only torch and
parkrl.algorithms (no Ray, no vLLM: the GPU machine has neither).

    python scripts/gpu_check_correction.py --out "$OUT"
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
# parkrl/__init__.py imports the tools (httpx) and environments; only the pure tensor functions are
# needed here, so import parkrl as a bare namespace package over the source folder.
sys.modules.setdefault("parkrl", types.ModuleType("parkrl")).__path__ = [str(ROOT / "parkrl")]

from parkrl.algorithms import MODES, rollout_correction, rollout_kl  # noqa: E402
from parkrl.config import AlgorithmConfig  # noqa: E402


def token_logprobs(hidden: torch.Tensor, head: torch.Tensor, tokens: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """log softmax(hidden @ head^T) of `tokens`, computed in `dtype`, returned as fp32."""
    logits = hidden.to(dtype) @ head.to(dtype).T
    return torch.log_softmax(logits.float(), -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".", help="folder for correction.json")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=256)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    g = torch.Generator().manual_seed(0)
    vocab, width = 49152, 576
    head = (torch.randn(vocab, width, generator=g) * width ** -0.5 * 4).to(device)
    hidden = torch.randn(args.batch, args.length, width, generator=g).to(device)
    with torch.no_grad():
        # The engine's kernel splits the reduction in two (split-K), rounding each half to bf16:
        # the same weights, other rounding, as vLLM's kernels against the learner's.
        h, w, k = hidden.bfloat16(), head.bfloat16(), width // 2
        engine_logits = ((h[..., :k] @ w[:, :k].T) + (h[..., k:] @ w[:, k:].T)).float()
        tokens = torch.distributions.Categorical(logits=engine_logits).sample()
        rollout = torch.log_softmax(engine_logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        del engine_logits
        learner = {"bfloat16": token_logprobs(hidden, head, tokens, torch.bfloat16),
                   "float32": token_logprobs(hidden, head, tokens, torch.float32)}
    learner = {k: v.requires_grad_() for k, v in learner.items()}  # as the learner's are: weights must not carry it
    lengths = torch.randint(args.length // 4, args.length + 1, (args.batch,), generator=g)
    mask = (torch.arange(args.length) < lengths.unsqueeze(-1)).float().to(device)
    cfg = AlgorithmConfig()
    failures: list[str] = []
    result: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                    "torch": torch.__version__, "tokens": int(mask.sum()), "sides": {}}
    for side, old in learner.items():
        n = mask.sum()
        stats = {"logprob_diff": float(((old - rollout).abs() * mask).sum() / n),
                 "rollout_kl": float((rollout_kl(old, rollout) * mask).sum() / n), "modes": {}}
        for mode in MODES:
            start = time.perf_counter()
            fix = rollout_correction(old, rollout, mask, mode, cfg)
            if device.type == "cuda":
                torch.cuda.synchronize()
            elapsed_ms = (time.perf_counter() - start) * 1e3
            cpu = rollout_correction(old.cpu(), rollout.cpu(), mask.cpu(), mode, cfg)
            w = fix.weights[mask.bool()]
            on_band = (w == 0) | ((w >= cfg.rollout_is_low - 1e-6) & (w <= cfg.rollout_is_high + 1e-6))
            checks = {
                "finite": bool(torch.isfinite(fix.weights).all()),
                "no_grad": not fix.weights.requires_grad,
                "bounded": bool((w <= cfg.rollout_is_cap + 1e-6).all()) if mode in ("tis", "seq_tis")
                else bool(on_band.all()) if mode in ("mask", "seq_mask") else bool((w == 1).all()),
                "cuda_equals_cpu": bool(torch.allclose(fix.weights.cpu(), cpu.weights, rtol=1e-5, atol=1e-6)),
            }
            failures += [f"{side}/{mode}: {name}" for name, ok in checks.items() if not ok]
            stats["modes"][mode] = {
                "weight_mean": float((fix.weights * mask).sum() / mask.sum()),
                "weight_max": float(w.max()),
                "capped_frac": float((fix.capped * mask).sum() / mask.sum()),
                "masked_frac": float((fix.masked * mask).sum() / mask.sum()),
                "ms": round(elapsed_ms, 3), "checks": checks,
            }
        result["sides"][f"learner {side} vs engine bfloat16"] = stats
    result["failures"] = failures
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "correction.json").write_text(json.dumps(result, indent=2))
    for side, stats in result["sides"].items():
        print(f"{side}: logprob_diff {stats['logprob_diff']:.4f}, rollout/kl {stats['rollout_kl']:.2e}, "
              + ", ".join(f"{m} w_mean {v['weight_mean']:.4f} max {v['weight_max']:.3f}" for m, v in stats["modes"].items()))
    print("correction checks:", "PASS" if not failures else f"FAIL {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
