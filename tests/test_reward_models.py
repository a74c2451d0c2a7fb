"""Reward-model workers: a Ray actor scores exactly as a direct forward pass of the same model,
and model scores combine with the rule reward by their weights."""
from types import SimpleNamespace

import pytest
import torch

from parkrl.config import Config, RewardModelConfig, RoleResources
from parkrl.models.loading import resolve_model_path
from parkrl.workers import WorkerGroup
from parkrl.workers.fleet import Fleet
from parkrl.workers.reward_model import RewardModelWorker

pytestmark = pytest.mark.integration
PROMPTS = ["What is 2 + 3?", "What is 7 * 6?", "Name a colour.", "What is 9 - 4?", "Say hi."]
COMPLETIONS = ["5", "It is 42, because 7 times 6 is 42.", "blue", "I do not know", "hi"]


@pytest.fixture(scope="module")
def minilm_with_head(tmp_path_factory) -> str:
    """The packaged MiniLM encoder with a (seeded) one-logit head, saved so every process loads the same head."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    src = resolve_model_path("all-minilm-l6-v2")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(src, num_labels=1)
    path = tmp_path_factory.mktemp("minilm-rm")
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(src).save_pretrained(path)
    return str(path)


def direct_scores(path: str) -> list[float]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1).eval()
    with torch.no_grad():
        return model(**tok(PROMPTS, COMPLETIONS, padding=True, return_tensors="pt")).logits[:, 0].tolist()


def test_reward_model_actor_matches_a_direct_forward(minilm_with_head, ray_session):
    spec = RewardModelConfig(path=minilm_with_head, batch_size=2)  # several batches, different padding
    group = WorkerGroup("reward_model0", RewardModelWorker, RoleResources(2, 1.0), "ray", 120, lambda r: (spec, r))
    try:
        cfg = Config()
        cfg.reward.models = [RewardModelConfig(path=minilm_with_head, weight=2.0, batch_size=2)]
        combined = Fleet.model_rewards(SimpleNamespace(reward_models=[group], cfg=cfg), PROMPTS, COMPLETIONS)
    finally:
        group.shutdown()
    expected = direct_scores(minilm_with_head)
    assert len(set(round(v, 4) for v in expected)) == len(expected)  # the scores tell the pairs apart
    assert combined == pytest.approx([2.0 * v for v in expected], abs=1e-5)


def test_model_and_rule_rewards_combine_by_weight(minilm_with_head, tiny_model_dir):
    from parkrl.batch import TrajectoryBatch
    from parkrl.collect import episode_scores
    from parkrl.models import load_tokenizer
    from parkrl.rewards import MatchAnswerReward

    tok = load_tokenizer(tiny_model_dir)
    ids = [tok.encode(c, add_special_tokens=False) for c in COMPLETIONS]
    samples = [{"question": q, "answer": a, "messages": []} for q, a in zip(PROMPTS, ["5", "42", "red", "5", "x"])]
    batch = TrajectoryBatch.from_lists(prompt_ids=[[1]] * 5, response_ids=ids, loss_mask=[[1] * len(i) for i in ids],
                            rollout_logprobs=[[0.0] * len(i) for i in ids], group_ids=list(range(5)), samples=samples,
                            finish_reasons=["stop"] * 5)
    cfg = Config()
    cfg.trainer.runtime = "local"
    cfg.reward.weight = 0.5
    cfg.reward.models = [RewardModelConfig(path=minilm_with_head, weight=-1.0)]
    group = WorkerGroup("reward_model0", RewardModelWorker, RoleResources(1, 1.0), "local", 120,
                        lambda r: (cfg.reward.models[0], r))
    fleet = SimpleNamespace(reward_models=[group], cfg=cfg)
    fleet.model_rewards = lambda p, c: Fleet.model_rewards(fleet, p, c)
    scores, task, failed = episode_scores(batch, MatchAnswerReward(), tok, cfg, fleet)
    group.shutdown()
    rule = [1.0, 1.0, 0.0, 0.0, 0.0]
    model = direct_scores(minilm_with_head)
    assert failed == 0 and task.tolist() == rule  # eval accuracy and dynamic sampling read the rule score
    assert scores.tolist() == pytest.approx([0.5 * r - m for r, m in zip(rule, model)], abs=1e-5)
