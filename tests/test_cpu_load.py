"""The in-place CPU weight load (parkrl.sync.cpu_load) into a real vLLM engine: a plain model
takes it, and it leaves the engine generating exactly as after vLLM's own `reload_weights` of
the same weights."""
import io
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
    from parkrl.engines.types import SamplingSpec
    from parkrl.engines.vllm_engine import VLLMEngine
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


def _bf16_engine(model_dir: str, port: int, wires: list, queue) -> None:
    import logging

    from parkrl.engines.types import SamplingSpec
    from parkrl.engines.vllm_engine import VLLMEngine

    engine = VLLMEngine(model_dir, "bfloat16", 256, 0.25, 0, [0])
    engine.join_sync_group("127.0.0.1", port, 1, 2, "gloo", 60)
    worker = engine.llm.llm_engine.model_executor.driver_worker.worker
    casts = []  # vLLM's "Attempted to load weight ... with dtype torch.float32 into ... torch.bfloat16"
    handler = logging.Handler()
    handler.emit = lambda record: casts[-1].append(record.getMessage()) if "Attempted to load" in record.getMessage() else None
    logging.getLogger("vllm.model_executor.models.utils").addHandler(handler)
    results = []
    for wire in wires:
        casts.append([])
        engine.receive_weights(wire)
        model = worker.model_runner.get_model()
        plain = {n: p.detach().clone() for n, p in model.named_parameters() if p.numel()}  # norms, embedding
        done = engine.generate(PROMPTS, SamplingSpec(n=1, max_new_tokens=8, temperature=0.0))
        results.append((worker._parkrl_loader[1] is not None, plain, [(c.token_ids, c.logprobs) for g in done for c in g]))
    engine.shutdown()
    buffer = io.BytesIO()  # plain bytes: tensors sent through the queue would be shared by fds of a process that exits
    torch.save((results, casts), buffer)
    queue.put(buffer.getvalue())


def test_a_bf16_engine_gets_the_learner_weights_cast_on_the_sender(tiny_model_dir):
    """The learner sends in the engine's dtype (bf16: half the bytes); the engine ends up with
    the learner's fp32 weights cast to bf16, bit for bit what vLLM's own cast of fp32 weights
    gives, without its per-tensor "Attempted to load weight (float32) into bfloat16" warnings."""
    from parkrl.models.loading import load_causal_lm

    state = _perturbed(tiny_model_dir, 5)
    tied = tied_names(load_causal_lm(tiny_model_dir, torch.float32))
    as_bf16, as_fp32 = metas_of(state.items(), torch.bfloat16, tied), metas_of(state.items(), torch.float32, tied)
    assert sum(m.nbytes for m in as_bf16) * 2 == sum(m.nbytes for m in as_fp32)
    port = free_port()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    wires = [[m.to_wire() for m in metas] for metas in (as_bf16, as_fp32)]
    proc = ctx.Process(target=_bf16_engine, args=(tiny_model_dir, port, wires, queue))
    proc.start()
    group = init_sync_group("127.0.0.1", port, 0, 2, "gloo", timeout_s=120)
    for metas in (as_bf16, as_fp32):
        send_tensors(group, [state[m.name] for m in metas], metas, 120)
    (sent_bf16, sent_fp32), casts = torch.load(io.BytesIO(queue.get(timeout=300)), weights_only=False)
    proc.join(60)
    assert sent_bf16[0] and not sent_fp32[0]  # bf16 goes straight into place; fp32 needs vLLM's casting reload
    assert casts[0] == [] and len(casts[1]) > 0  # only the fp32 wire made vLLM warn
    assert sent_bf16[1] and sent_bf16[1].keys() == sent_fp32[1].keys()
    for name, param in sent_bf16[1].items():
        assert param.dtype == torch.bfloat16, name
        assert torch.equal(param, sent_fp32[1][name]), name
        source = name if name in state else None
        if source is not None:
            assert torch.equal(param, state[source].to(torch.bfloat16)), name  # the learner's weight cast to bf16
    assert sent_bf16[2] == sent_fp32[2]  # same tokens and logprobs to the last bit: the same weights everywhere
