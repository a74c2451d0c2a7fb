"""The in-place CPU weight load (parkrl.sync.cpu_load) into a real vLLM engine: a plain model
takes it, and it leaves the engine generating exactly as after vLLM's own `reload_weights` of
the same weights."""
import multiprocessing as mp

import pytest
import torch

from parkrl.sync import free_port, init_sync_group, metas_of, send_tensors, tied_names

pytestmark = pytest.mark.integration

SEEDS = [1, 1, 2, 2]  # each perturbation loaded in place, then by vLLM's reload
PROMPTS = [[1, 504, 3403, 2988, 288, 451], [1, 2000, 300, 40, 5000, 28, 330]]


def _perturbed(model_dir: str, seed: int) -> dict[str, torch.Tensor]:
    from parkrl.models.loading import load_causal_lm

    state = load_causal_lm(model_dir, torch.float32).state_dict()
    g = torch.Generator().manual_seed(seed)
    return {k: v + 0.05 * v.std() * torch.randn(v.shape, generator=g) for k, v in state.items()}


def _engine(model_dir: str, port: int, wire: list, queue) -> None:
    from parkrl.rollout.types import SamplingSpec
    from parkrl.rollout.vllm_engine import VLLMEngine
    from parkrl.sync.vllm_extension import WeightSyncExtension

    engine = VLLMEngine(model_dir, "float32", 256, 0.25, 0, [0])
    engine.join_sync_group("127.0.0.1", port, 1, 2, "gloo", 60)
    worker = engine.llm.llm_engine.model_executor.driver_worker.worker
    in_place = WeightSyncExtension._parkrl_cpu_loader
    outputs, took_in_place, shared = [], [], []
    for k in range(len(SEEDS)):
        WeightSyncExtension._parkrl_cpu_loader = in_place if k % 2 == 0 else (lambda self, metas: None)
        engine.receive_weights(wire)
        took_in_place.append(k % 2 == 0 and worker._parkrl_loader[1] is not None)
        model = worker.model_runner.get_model()
        shared.append(model.lm_head.cpu_linear is model.model.embed_tokens.cpu_linear)
        done = engine.generate(PROMPTS, SamplingSpec(n=1, max_new_tokens=8, temperature=0.0))
        outputs.append([(c.token_ids, c.logprobs) for group in done for c in group])
    engine.shutdown()
    queue.put((took_in_place, shared, outputs))


def test_in_place_load_equals_vllm_reload(tiny_model_dir):
    from parkrl.models.loading import load_causal_lm

    state = _perturbed(tiny_model_dir, 0)
    tied = tied_names(load_causal_lm(tiny_model_dir, torch.float32))
    assert tied == {"lm_head.weight": "model.embed_tokens.weight"}  # travels once, loaded under both names
    metas = metas_of(state.items(), torch.float32, tied)
    port = free_port()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_engine, args=(tiny_model_dir, port, [m.to_wire() for m in metas], queue))
    proc.start()
    group = init_sync_group("127.0.0.1", port, 0, 2, "gloo", timeout_s=120)
    for seed in SEEDS:
        state = _perturbed(tiny_model_dir, seed)
        send_tensors(group, [state[m.name] for m in metas], metas, 120)
    took_in_place, shared, outputs = queue.get(timeout=300)
    proc.join(60)
    assert took_in_place == [True, False, True, False]
    assert shared == [True, False, True, False]  # tied matrix packed once in place; vLLM's reload packs both
    assert outputs[0] == outputs[1]  # in place == reload, same weights, to the last bit of each logprob
    assert outputs[2] == outputs[3]
    assert outputs[0] != outputs[2]  # and the weights did change the model
