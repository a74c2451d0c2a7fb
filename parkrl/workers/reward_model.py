"""A reward-model worker: an AutoModelForSequenceClassification scoring (prompt, completion) pairs."""
from __future__ import annotations

import torch

from parkrl.config import RewardModelConfig
from parkrl.models.loading import resolve_model_path
from parkrl.workers.process import peak_rss_gib, role_device, set_torch_threads


class RewardModelWorker:
    """One replica of a reward model; the score is the first logit. A decoder with a chat
    template (e.g. SmolLM2 with a classification head) reads the conversation in its template;
    a cross-encoder (BERT-style) reads the (prompt, completion) text pair."""

    def __init__(self, spec: RewardModelConfig, rank: int) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        set_torch_threads(spec.resources.cpus_per_worker)
        self.spec = spec
        path = resolve_model_path(spec.path, key="reward.models[].path")
        self.device = role_device(spec.resources.gpus_per_worker, "reward.models[].resources.gpus_per_worker")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.tokenizer.chat_template:
            self.tokenizer.truncation_side = "left"  # keep the end of the completion
        self.model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1).to(self.device).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id

    @torch.no_grad()
    def score(self, prompts: list[str], completions: list[str]) -> list[float]:
        """The model's score of every (prompt, completion) pair, batched."""
        out: list[float] = []
        for k in range(0, len(prompts), self.spec.batch_size):
            enc = self._encode(prompts[k:k + self.spec.batch_size], completions[k:k + self.spec.batch_size])
            logits = self.model(**enc.to(self.device)).logits
            out += logits[:, 0].float().cpu().tolist()
        return out

    def _encode(self, prompts: list[str], completions: list[str]):
        """A chat model's own template (user prompt, assistant completion), cut from the left so
        the end of the completion survives; otherwise a text pair with only the prompt cut."""
        tok, n = self.tokenizer, self.spec.max_length
        if tok.chat_template:
            texts = [tok.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": c}],
                                             tokenize=False) for p, c in zip(prompts, completions)]
            return tok(texts, truncation=True, max_length=n, padding=True, return_tensors="pt", add_special_tokens=False)
        return tok(prompts, completions, truncation="only_first", max_length=n, padding=True, return_tensors="pt")

    def peak_rss_gib(self) -> float:
        return peak_rss_gib()

    def shutdown(self) -> None:
        pass
