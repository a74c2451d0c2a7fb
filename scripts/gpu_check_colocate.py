"""GPU check of colocated mode's weight hand-over (resources.colocate), for the `device` machine.

Colocated, learner rank i and engine i share one GPU: after an update the learner gathers its
full weights on that GPU and shares them by CUDA IPC (parkrl.sync.ipc); the engine process
opens them without a trip through host memory and reloads them. This script runs the learner
side with parkrl's real FSDP2 learner (one rank, NCCL) and the engine side in a second process
on the same GPU with the same `open_shared` the vLLM worker extension calls, loading into an HF
model (the device has no vLLM or Ray: the engine's sleep/wake calls are vLLM's own and are not
exercised here). It checks that the receiver computes the learner's logprobs after the
hand-over, and times it against the gather-to-host path that the NCCL broadcast sync uses.

    python scripts/gpu_check_colocate.py            # prints one JSON line; exit 0 = checks passed
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import types

import torch
import torch.multiprocessing as mp

# parkrl/__init__.py imports the tools and environments, which need pydantic (not on the GPU machine); the
# learner needs neither, so parkrl is imported as a bare namespace package over the source folder.
PARKRL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "parkrl")
sys.modules.setdefault("parkrl", types.ModuleType("parkrl")).__path__ = [PARKRL]

HIDDEN, LAYERS, VOCAB = 1024, 12, 32000  # about 0.3B parameters, Llama-shaped


def make_model_dir() -> str:
    """A random-init Llama and a minimal tokenizer, written to a temp dir (the device has no hub)."""
    from tokenizers import Tokenizer, models
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = tempfile.mkdtemp(prefix="parkrl-colocate-")
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=4 * HIDDEN, num_hidden_layers=LAYERS,
                         num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=2048,
                         tie_word_embeddings=False, pad_token_id=0)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    vocab = {"<pad>": 0, "<unk>": 1}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
                                  pad_token="<pad>", unk_token="<unk>")
    tok.save_pretrained(path)
    return path


def batch(n: int = 8):
    from parkrl.batch import TrajectoryBatch

    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(2, VOCAB, (64,), generator=g).tolist() for _ in range(n)]
    responses = [torch.randint(2, VOCAB, (192,), generator=g).tolist() for _ in range(n)]
    b = TrajectoryBatch.from_lists(prompts, responses, [[1] * 192] * n, [[-1.0] * 192] * n, [i // 4 for i in range(n)],
                                   [{}] * n, ["stop"] * n)
    b.add("advantages", torch.randn(n, generator=g))
    return b


def engine_side(model_dir: str, inbox, outbox) -> None:
    """The 'engine': an HF model on the same GPU that loads the learner's shared tensors."""
    from transformers import AutoModelForCausalLM

    from parkrl.models.response import ResponseLogprobs, pad_samples
    from parkrl.sync.ipc import open_shared

    torch.cuda.set_device(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).cuda().eval()
    outbox.put("ready")
    handles = inbox.get()
    t0 = time.perf_counter()
    named = open_shared(handles, torch.cuda.current_device())
    missing, unexpected = model.load_state_dict(dict(named), strict=False)
    torch.cuda.synchronize()
    load_s = time.perf_counter() - t0
    del named
    b = batch()
    padded = pad_samples(b.prompt_ids, b.response_ids, b.response_lengths.tolist(), b.loss_mask, 0).to("cuda")
    with torch.no_grad():
        logprobs = ResponseLogprobs(model)(padded)[0].float().cpu()
    outbox.put({"load_s": load_s, "missing": list(missing), "unexpected": list(unexpected), "logprobs": logprobs})


def main() -> int:
    if not torch.cuda.is_available():
        print(json.dumps({"check": "colocate", "skipped": "no CUDA device"}))
        return 2
    from parkrl.config import Config
    from parkrl.sync.buckets import TensorMeta
    from parkrl.workers.fsdp_learner import FSDPLearner

    model_dir = make_model_dir()
    ctx = mp.get_context("spawn")
    inbox, outbox = ctx.Queue(), ctx.Queue()
    engine = ctx.Process(target=engine_side, args=(model_dir, inbox, outbox))
    engine.start()
    assert outbox.get(timeout=300) == "ready"

    cfg = Config()
    cfg.learner.dtype, cfg.rollout.dtype, cfg.learner.lr = "float32", "float32", 1e-4  # fp32: an exact comparison
    cfg.learner.micro_batch_size = 4
    cfg.resources.learner.cpus_per_worker = 4
    cfg.resources.learner.gpus_per_worker = 1  # the learner's device follows its GPUs
    learner = FSDPLearner(cfg, model_dir, rank=0, world_size=1)
    learner.setup(*learner.free_address())
    b = batch()
    learner.update(b)  # the weights now differ from the engine's random init
    metas = learner.weight_metas()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    handles = learner.share_weights(metas)
    torch.cuda.synchronize()
    share_s = time.perf_counter() - t0
    mem_shared = torch.cuda.memory_allocated() / 2**30
    inbox.put(handles)
    got = outbox.get(timeout=600)
    learner.release_shared_weights()
    mem_released = torch.cuda.memory_allocated() / 2**30
    t0 = time.perf_counter()
    learner._full_state_dict()  # the broadcast path's gather to host memory, for comparison
    host_gather_s = time.perf_counter() - t0
    learner_logprobs = learner.per_token(b)  # [n, T] float32, 0 on padding (as the engine side)
    diff = (learner_logprobs - got["logprobs"]).abs().max().item()
    engine.join(60)
    params = sum(TensorMeta.from_wire(row).numel for row in metas)
    result = {
        "check": "colocate", "device": torch.cuda.get_device_name(0), "params": params,
        "tensors": len(metas), "share_s": round(share_s, 4), "engine_open_and_load_s": round(got["load_s"], 4),
        "host_gather_s": round(host_gather_s, 4), "gpu_alloc_gib_while_shared": round(mem_shared, 3),
        "gpu_alloc_gib_after_release": round(mem_released, 3), "missing": got["missing"][:5],
        "max_abs_logprob_diff": diff,
    }
    ok = diff < 1e-3 and not got["missing"]
    result["ok"] = ok
    print(json.dumps(result))
    learner.shutdown()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
