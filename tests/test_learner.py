"""The learner's gradient does not depend on how a mini-batch is cut into micro-batches, nor on
whether a micro-batch packs its shared prompts (learner.share_prompts), nor on skipping the
samples whose advantage is 0; and the tied output head is named for the sync as an alias."""
import pytest
import torch
from torch.distributed.tensor import DTensor

from parkrl.batch import TrajectoryBatch
from parkrl.config import Config
from parkrl.workers.fsdp_learner import FSDPLearner


def random_batch(n: int = 8) -> TrajectoryBatch:
    g = torch.Generator().manual_seed(0)
    # groups of 4 share a prompt, as GRPO groups do (the learner packs each prompt once per micro-batch)
    distinct = [torch.randint(3, 1000, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g).tolist()
                for _ in range((n + 3) // 4)]
    prompts = [distinct[i // 4] for i in range(n)]
    responses = [torch.randint(3, 1000, (int(torch.randint(2, 7, (1,), generator=g)),), generator=g).tolist() for _ in range(n)]
    masks = [[1] * len(r) for r in responses]
    masks[1][0] = 0  # an environment token inside a response
    batch = TrajectoryBatch(prompts, responses, masks, [[-1.0] * len(r) for r in responses],
                            [i // 4 for i in range(n)], [{}] * n, ["stop"] * n)
    batch.add("advantages", torch.randn(n, generator=g))
    return batch


def grad_norm_and_loss(model_dir: str, micro_batch_size: int, max_tokens: int = 0) -> tuple[float, float, set[str]]:
    cfg = Config()
    cfg.learner.dtype, cfg.learner.micro_batch_size, cfg.learner.grad_clip = "float32", micro_batch_size, 1e9
    cfg.learner.max_tokens_per_micro_batch = max_tokens
    learner = FSDPLearner(cfg, model_dir, rank=0, world_size=1)
    learner.setup(*learner.free_address())
    metrics = learner.update(random_batch())
    layouts = {type(mb).__name__ for _, mb in learner._micro_batches(random_batch())}
    return metrics["learner/grad_norm"], metrics["loss/policy"], layouts


def test_micro_batch_size_does_not_change_the_gradient(tiny_model_dir):
    one_by_one = grad_norm_and_loss(tiny_model_dir, 1)  # one sample per pass: plain rows
    all_at_once = grad_norm_and_loss(tiny_model_dir, 8)  # two groups of 4: packed, each prompt once
    assert one_by_one[2] == {"PaddedBatch"} and all_at_once[2] == {"SharedPromptBatch"}
    assert one_by_one[0] > 0
    assert one_by_one[0] == pytest.approx(all_at_once[0], rel=1e-4)
    assert one_by_one[1] == pytest.approx(all_at_once[1], rel=1e-4, abs=1e-7)


def test_token_budget_micro_batches_do_not_change_the_gradient(tiny_model_dir):
    fixed = grad_norm_and_loss(tiny_model_dir, 8)
    budget = grad_norm_and_loss(tiny_model_dir, 8, max_tokens=24)  # 2-3 short samples per pass, long ones alone
    assert budget[0] == pytest.approx(fixed[0], rel=1e-4)
    assert budget[1] == pytest.approx(fixed[1], rel=1e-4, abs=1e-7)


def _update_twice(model_dir: str, batch: TrajectoryBatch, skip: bool, kl_in_loss: bool = False, weight_decay: float = 0.0,
                  grad_clip: float = 1e9):
    from parkrl.workers.learner import Learner

    cfg = Config()
    cfg.learner.dtype, cfg.learner.micro_batch_size, cfg.learner.lr, cfg.learner.grad_clip = "float32", 4, 1e-3, grad_clip
    cfg.learner.weight_decay = weight_decay
    if kl_in_loss:
        cfg.algorithm.kl_coef = 0.1
        batch.add("ref_logprobs", [[-1.0] * len(r) for r in batch.response_ids])
    learner = FSDPLearner(cfg, model_dir, rank=0, world_size=1)
    if not skip:  # the reference: every sample computed
        learner._rows_with_gradient = lambda mini, stats: list(range(len(mini)))
    else:
        assert learner._rows_with_gradient.__func__ is Learner._rows_with_gradient
    learner.setup(*learner.free_address())
    metrics = [learner.update(batch) for _ in range(2)]
    return metrics, learner._full_state_dict()


def zero_advantage_batch(n: int = 16, zero_rows: tuple[int, ...] = (0, 1, 2, 3, 8, 9, 10, 11)) -> TrajectoryBatch:
    batch = random_batch(n)
    if zero_rows:
        batch["advantages"][list(zero_rows)] = 0.0  # groups whose samples all scored the same
    return batch


def test_zero_advantage_samples_are_skipped_without_changing_the_update(tiny_model_dir):
    skipped, w_skipped = _update_twice(tiny_model_dir, zero_advantage_batch(), skip=True)
    full, w_full = _update_twice(tiny_model_dir, zero_advantage_batch(), skip=False)
    assert [m["learner/skipped_samples"] for m in skipped] == [8, 8]
    assert [m["learner/skipped_samples"] for m in full] == [0, 0]
    assert full[0]["learner/grad_norm"] > 0
    for a, b in zip(skipped, full):
        assert a["learner/grad_norm"] == pytest.approx(b["learner/grad_norm"], rel=1e-5)
    for name, w in w_full.items():
        torch.testing.assert_close(w_skipped[name], w, rtol=0, atol=1e-6, msg=name)
    # KL in the loss gives every sample a gradient: nothing may be skipped
    with_kl, _ = _update_twice(tiny_model_dir, zero_advantage_batch(), skip=True, kl_in_loss=True)
    assert with_kl[0]["learner/skipped_samples"] == 0


def test_a_batch_without_signal_still_takes_its_optimizer_step(tiny_model_dir):
    """Every advantage 0: one row still runs, so AdamW steps (its weight decay moves the weights)
    exactly as it would have on the whole batch."""
    from transformers import AutoModelForCausalLM

    flat = tuple(range(8))
    skipped, w_skipped = _update_twice(tiny_model_dir, zero_advantage_batch(8, flat), skip=True, weight_decay=0.1)
    full, w_full = _update_twice(tiny_model_dir, zero_advantage_batch(8, flat), skip=False, weight_decay=0.1)
    assert skipped[0]["learner/skipped_samples"] == 7
    assert skipped[0]["learner/grad_norm"] == full[0]["learner/grad_norm"] == 0
    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    assert not torch.equal(w_full["model.norm.weight"], initial["model.norm.weight"])  # decay moved it
    for name, w in w_full.items():
        assert torch.equal(w_skipped[name], w), name


def test_the_tied_head_is_named_for_the_sync_but_travels_once(tiny_model_dir):
    from parkrl.sync import TensorMeta

    cfg = Config()
    cfg.learner.dtype = cfg.rollout.dtype = "float32"
    learner = FSDPLearner(cfg, tiny_model_dir, rank=0, world_size=1)
    learner.setup(*learner.free_address())
    metas = [TensorMeta.from_wire(row) for row in learner.weight_metas()]
    assert {m.name: m.alias_of for m in metas if m.alias_of} == {"lm_head.weight": "model.embed_tokens.weight"}
    assert len({m.name for m in metas}) == len(metas) and "model.embed_tokens.weight" in {m.name for m in metas}
    full = learner._full_state_dict()  # what the sync sends, weight by weight, without the alias
    sent = list(learner._weights_to_send(metas))
    assert [t is None for t in sent] == [bool(m.alias_of) for m in metas]
    for m, t in zip(metas, sent):
        if t is not None:
            assert torch.equal(t, full[m.name]) and not isinstance(t, DTensor), m.name
