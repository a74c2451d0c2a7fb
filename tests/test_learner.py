"""The learner's gradient does not depend on how a mini-batch is cut into micro-batches, nor on
whether a micro-batch packs its shared prompts (learner.share_prompts)."""
import pytest
import torch

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
