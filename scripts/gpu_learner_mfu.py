"""GPU throughput of parkrl's learner: a Qwen3-0.6B-shaped model (random init) trained through
the real FSDP2 learner (`FSDPLearner.update`: forward, response logprobs, PPO-clip loss,
backward, AdamW) on sequences of 4k tokens. Prints one JSON line with tokens/s and MFU.

    python scripts/gpu_learner_mfu.py [--seq 4096] [--batch 4] [--steps 5] [--checkpointing]

Runs with torch + transformers only (no Ray, no vLLM), on one GPU. MFU counts 6 x parameters
x tokens for the matmuls (the output head only at response positions, where parkrl computes
it) plus the causal attention's 6 x layers x seq x hidden x tokens, over the GPU's dense bf16
peak (989 TFLOP/s for H100/H200 SXM; --peak-tflops to change).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import types

import torch

# parkrl/__init__.py imports the tools and environments, which need pydantic (not on the GPU machine); the
# learner needs neither, so parkrl is imported as a bare namespace package over the source folder.
PARKRL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "parkrl")
sys.modules.setdefault("parkrl", types.ModuleType("parkrl")).__path__ = [PARKRL]


def qwen3_0_6b_dir() -> tuple[str, object]:
    from tokenizers import Tokenizer, models
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    config = AutoConfig.for_model(
        "qwen3", vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
        num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
        tie_word_embeddings=True, rope_theta=1e6, pad_token_id=0,
    )
    path = tempfile.mkdtemp(prefix="parkrl-mfu-")
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(path)
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<pad>": 0, "<unk>": 1}, unk_token="<unk>")),
                                  pad_token="<pad>", unk_token="<unk>")
    tok.save_pretrained(path)
    del model
    torch.cuda.empty_cache()
    return path, config


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--prompt", type=int, default=512, help="prompt tokens of each sequence (the rest is response)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--checkpointing", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print(json.dumps({"check": "learner_mfu", "skipped": "no CUDA device"}))
        return 2
    from parkrl.batch import TrajectoryBatch
    from parkrl.config import Config
    from parkrl.workers.fsdp_learner import FSDPLearner

    path, mc = qwen3_0_6b_dir()
    cfg = Config()
    cfg.learner.dtype, cfg.learner.lr, cfg.learner.micro_batch_size = "bfloat16", 1e-5, args.batch
    cfg.learner.gradient_checkpointing, cfg.learner.share_prompts = args.checkpointing, False
    cfg.resources.learner.cpus_per_worker = 4
    cfg.resources.learner.gpus_per_worker = 1  # the learner's device follows its GPUs
    learner = FSDPLearner(cfg, path, rank=0, world_size=1)
    learner.setup(*learner.free_address())
    g = torch.Generator().manual_seed(0)
    resp = args.seq - args.prompt
    prompts = [torch.randint(2, mc.vocab_size, (args.prompt,), generator=g).tolist() for _ in range(args.batch)]
    responses = [torch.randint(2, mc.vocab_size, (resp,), generator=g).tolist() for _ in range(args.batch)]
    batch = TrajectoryBatch.from_lists(prompts, responses, [[1] * resp] * args.batch, [[-1.0] * resp] * args.batch,
                                       list(range(args.batch)), [{}] * args.batch, ["stop"] * args.batch)
    batch.add("advantages", torch.randn(args.batch, generator=g))
    times = []
    for step in range(args.steps + 1):  # the first is warm-up
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        learner.update(batch)
        torch.cuda.synchronize()
        if step:
            times.append(time.perf_counter() - t0)
    sec = sorted(times)[len(times) // 2]
    tokens = args.batch * args.seq
    embed = mc.vocab_size * mc.hidden_size
    body = sum(p.numel() for p in learner.policy.parameters()) - embed  # tied head counted once, as the embedding
    flops = (6 * body * tokens + 6 * embed * args.batch * resp  # matmuls; output head at response positions
             + 6 * mc.num_hidden_layers * args.seq * mc.num_attention_heads * mc.head_dim * tokens)  # causal attention
    result = {
        "check": "learner_mfu", "device": torch.cuda.get_device_name(0), "model": "qwen3-0.6b shape, random init",
        "seq": args.seq, "batch": args.batch, "gradient_checkpointing": args.checkpointing,
        "median_update_s": round(sec, 3), "tokens_per_s": round(tokens / sec), "tflops": round(flops / sec / 1e12, 1),
        "mfu": round(flops / sec / 1e12 / args.peak_tflops, 3),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1),
    }
    print(json.dumps(result))
    learner.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
