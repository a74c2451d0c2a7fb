"""A reward-model worker: an AutoModelForSequenceClassification scoring (prompt, completion) pairs."""
from __future__ import annotations

import torch

from parkrl.config import RewardModelConfig
from parkrl.models.loading import resolve_model_path
from parkrl.workers.process import peak_rss_gib, set_torch_threads


class RewardModelWorker:
    """One replica of a reward model. Pairs are encoded as the tokenizer's text pair
    (prompt, completion), so a cross-encoder (BERT-style) or a decoder with a classification
    head both work; the score is the first logit."""

    def __init__(self, spec: RewardModelConfig, rank: int) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        set_torch_threads(spec.resources.cpus_per_worker)
        self.spec = spec
        path = resolve_model_path(spec.path, key="reward.models[].path")
        self.device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1).to(self.device).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id

    @torch.no_grad()
    def score(self, prompts: list[str], completions: list[str]) -> list[float]:
        """The model's score of every (prompt, completion) pair, batched."""
        out: list[float] = []
        for k in range(0, len(prompts), self.spec.batch_size):
            enc = self.tokenizer(prompts[k:k + self.spec.batch_size], completions[k:k + self.spec.batch_size],
                                 truncation=True, max_length=self.spec.max_length, padding=True, return_tensors="pt")
            logits = self.model(**enc.to(self.device)).logits
            out += logits[:, 0].float().cpu().tolist()
        return out

    def peak_rss_gib(self) -> float:
        return peak_rss_gib()

    def shutdown(self) -> None:
        pass
