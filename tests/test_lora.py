"""LoRA through PEFT on the FSDP2 learner: only the adapters train, the engine receives merged
weights (its logprobs match the learner's after every sync), and final/ is a plain HF model."""
import pytest
import torch

from parkrl.models.lora import merged_state

pytestmark = pytest.mark.integration


def test_merge_by_hand():
    state = {"l.base_layer.weight": torch.eye(2), "l.base_layer.bias": torch.ones(2),
             "l.lora_A.default.weight": torch.tensor([[1.0, 2.0]]), "l.lora_B.default.weight": torch.tensor([[3.0], [4.0]]),
             "norm.weight": torch.ones(2)}
    out = merged_state(state, scaling=0.5)
    assert set(out) == {"l.weight", "l.bias", "norm.weight"}
    assert out["l.weight"].tolist() == [[1 + 1.5, 3.0], [2.0, 1 + 4.0]]  # I + 0.5 * B @ A


@pytest.mark.parametrize("runtime, backend, ranks", [("local", "hf", 1), ("ray", "vllm", 2)])
def test_lora_run_trains_adapters_only_and_syncs_merged_weights(tiny_model_dir, tmp_path, runtime, backend, ranks,
                                                                request):
    from test_integration import SYNC_OK, read_metrics, tiny_config
    from transformers import AutoModelForCausalLM

    from parkrl.controller import train

    if runtime == "ray":
        request.getfixturevalue("ray_session")
    cfg = tiny_config(tiny_model_dir, str(tmp_path / "run"), trainer__runtime=runtime, rollout__backend=backend,
                      trainer__total_steps=3, trainer__eval_every=0, learner__lora_rank=8, learner__lora_alpha=16.0,
                      learner__lr=5e-3)
    cfg.resources.learner.num_workers = ranks  # 2: the adapters sharded by FSDP2 beside frozen weights
    rows = read_metrics(train(cfg))
    # Steps 2 and 3 generate with synced weights: if the merge or the names were wrong, the
    # engine would still hold the base model and disagree with the learner.
    assert all(r["rollout/logprob_diff"] < SYNC_OK for r in rows)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    final = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final")  # plain HF weights, no adapters
    b, f = base.state_dict(), final.state_dict()
    assert set(b) == set(f)
    changed = {n for n in b if not torch.equal(b[n], f[n])}
    assert changed and all(any(t in n for t in cfg.learner.lora_targets) for n in changed)  # only adapted layers
    assert "model.embed_tokens.weight" not in changed and "model.norm.weight" not in changed
