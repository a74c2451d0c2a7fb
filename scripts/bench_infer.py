"""Batch inference throughput: parkrl.infer against a plain vLLM `LLM.generate` loop and HF
`generate`, on the same prompts, one after the other (each in a process of its own, alone on the
machine).

    .venv/bin/python scripts/bench_infer.py                 # 512 prompts x n=4 (several minutes)
    .venv/bin/python scripts/bench_infer.py --prompts 64    # a quick look

Workload: the embedded SmolLM2-135M-Instruct (model.path default); reasoning-gym chain_sum
prompts as recipe=grpo makes them (2 terms of 1 digit, its system prompt), n samples each,
temperature 1.0, at most 32 new tokens; the engine dtype `rollout.dtype` resolves to on this
machine, for all three. parkrl.infer: one engine (resources.rollout.num_workers=1, 2 cores),
infer.batch_size prompts per engine call, scoring and writing Parquet included. vLLM: the same
engine settings parkrl uses (in-process engine, 32-token KV blocks, eager), the same batches.
HF: `model.generate(do_sample=True, num_return_sequences=n)` per batch, left padding, 2 threads.

Each line: rows/s and completion tokens/s after the first batch (start-up and the first batch
excluded: the steady rate) and end to end, from the process's first work to the last result
("e2e": prompts, model load, engine start, and for parkrl the Ray start and the Parquet writes).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def overrides(args) -> list[str]:
    return [f"data.train_size={args.prompts}", f"infer.n={args.n}", f"infer.batch_size={args.batch_size}",
            f"rollout.max_new_tokens={args.max_new_tokens}", "resources.rollout.num_workers=1",
            "resources.rollout.cpus_per_worker=2", "trainer.seed=0"]


def prompts_and_cfg(args):
    from parkrl.api import compose
    from parkrl.inference.pipeline import input_rows
    from parkrl.models import load_tokenizer, resolve_model_path

    cfg = compose("grpo", overrides(args))
    _, _, source = input_rows(cfg, "infer")
    rows = source.rows(0, len(source))
    path = resolve_model_path(cfg.model.path, cfg.model.cache_dir)
    tok = load_tokenizer(path)
    from parkrl.models import chat_prompt_ids

    return cfg, path, tok, [chat_prompt_ids(tok, s["messages"]) for _, s in rows]


def run_parkrl(args) -> dict:
    from parkrl.api import compose
    from parkrl.inference.pipeline import run_infer

    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-infer-") as out:
        cfg = compose("grpo", [*overrides(args), f"infer.output={out}"])
        s = run_infer(cfg)
    rows, tokens, secs = s.steady
    return {"rows": s.written_rows, "tokens": s.tokens, "e2e_s": time.monotonic() - t0,
            "steady": {"rows": rows, "tokens": tokens, "s": secs}}


def run_vllm(args) -> dict:
    from parkrl.engines.vllm_engine import _cpu_engine_args, _engine_env
    from parkrl.models import resolve_dtype
    from parkrl.workers.process import cpu_slot

    t0 = time.monotonic()
    cfg, path, _, prompts = prompts_and_cfg(args)
    r = cfg.rollout
    _engine_env(cpu_slot(0, 2))
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(model=path, dtype=str(resolve_dtype(r.dtype)).removeprefix("torch."), max_model_len=r.max_model_len,
              kv_cache_memory_bytes=int(r.kv_cache_gib * (1 << 30)), enforce_eager=True, seed=0,
              max_num_batched_tokens=max(r.max_model_len, 8192), **_cpu_engine_args())
    tokens, steady = 0, Steady()
    for a in range(0, len(prompts), args.batch_size):
        batch = prompts[a:a + args.batch_size]
        params = [SamplingParams(n=args.n, temperature=r.temperature, max_tokens=r.max_new_tokens, seed=a * args.n + i * args.n)
                  for i in range(len(batch))]
        outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in batch], params, use_tqdm=False)
        tokens += sum(len(c.token_ids) for o in outs for c in o.outputs)
        steady.batch_done(len(batch), tokens)
    t2 = time.monotonic()
    llm.llm_engine.engine_core.shutdown()
    return {"rows": len(prompts), "tokens": tokens, "e2e_s": t2 - t0, "steady": steady.result()}


def run_hf(args) -> dict:
    import torch

    from parkrl.models import load_causal_lm, resolve_dtype

    t0 = time.monotonic()
    torch.set_num_threads(2)
    cfg, path, tok, prompts = prompts_and_cfg(args)
    model = load_causal_lm(path, resolve_dtype(cfg.rollout.dtype)).eval()
    torch.manual_seed(0)
    tokens, steady = 0, Steady()
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    for a in range(0, len(prompts), args.batch_size):
        batch = prompts[a:a + args.batch_size]
        width = max(map(len, batch))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=cfg.rollout.temperature,
                                 top_k=0, top_p=1.0, max_new_tokens=cfg.rollout.max_new_tokens,
                                 num_return_sequences=args.n, pad_token_id=pad, eos_token_id=tok.eos_token_id)
        new = out[:, width:]
        # tokens up to and including the first EOS (what the engines count)
        for row in new.tolist():
            tokens += next((k + 1 for k, t in enumerate(row) if t == tok.eos_token_id), len(row))
        steady.batch_done(len(batch), tokens)
    t2 = time.monotonic()
    return {"rows": len(prompts), "tokens": tokens, "e2e_s": t2 - t0, "steady": steady.result()}


class Steady:
    """Throughput after the first batch (start-up and warm-up excluded), as parkrl.infer reports it."""

    def __init__(self) -> None:
        self.rows, self.first = 0, None

    def batch_done(self, rows: int, tokens: int) -> None:
        self.rows += rows
        self.first = self.first or (self.rows, tokens, time.monotonic())
        self.last = (self.rows, tokens, time.monotonic())

    def result(self) -> dict:
        (r0, k0, t0), (r1, k1, t1) = self.first, self.last
        return {"rows": r1 - r0, "tokens": k1 - k0, "s": t1 - t0}


RUNNERS = {"parkrl.infer": run_parkrl, "vllm LLM.generate": run_vllm, "hf generate": run_hf}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=512)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--only", choices=list(RUNNERS), help=argparse.SUPPRESS)  # one method, in this process
    ap.add_argument("--skip", action="append", default=[], choices=list(RUNNERS))
    args = ap.parse_args()
    if args.only:
        print("RESULT " + json.dumps(RUNNERS[args.only](args)), flush=True)
        return
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    print(f"# {args.prompts} prompts x n={args.n}, <= {args.max_new_tokens} new tokens, batches of {args.batch_size}",
          flush=True)
    for name in RUNNERS:
        if name in args.skip:
            continue
        cmd = [sys.executable, __file__, "--only", name, "--prompts", str(args.prompts), "--n", str(args.n),
               "--batch-size", str(args.batch_size), "--max-new-tokens", str(args.max_new_tokens)]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            print(f"{name}: failed (exit {proc.returncode})\n{proc.stderr[-3000:]}", flush=True)
            continue
        r = json.loads(line[len("RESULT "):])
        st = r["steady"]
        warm = f"{st['rows'] / st['s']:7.2f} rows/s {st['tokens'] / st['s']:8.1f} tok/s" if st["rows"] and st["s"] > 0 else "n/a"
        print(f"{name:18s} after 1st batch {warm} | e2e {r['rows'] / r['e2e_s']:7.2f} rows/s {r['tokens'] / r['e2e_s']:8.1f} tok/s "
              f"({r['e2e_s']:.1f} s) | {r['tokens']} tokens", flush=True)


if __name__ == "__main__":
    main()
