"""transformers `generate` as the rollout engine, for machines without vLLM."""
from __future__ import annotations

import torch

from parkrl.engines.types import Completion, SamplingSpec
from parkrl.models.loading import load_causal_lm, load_tokenizer
from parkrl.sync.buckets import TensorMeta, receive_tensors
from parkrl.sync.process_group import init_sync_group


class HFEngine:
    """An HF causal LM sampling with `generate`; receives weights like the vLLM extension does."""

    def __init__(self, model_path: str, dtype: str, max_model_len: int, seed: int) -> None:
        self.model = load_causal_lm(model_path, getattr(torch, dtype)).eval()
        tok = load_tokenizer(model_path)
        self.pad_id = tok.pad_token_id
        self.eos_ids = set(_as_list(self.model.generation_config.eos_token_id or tok.eos_token_id))
        self.max_model_len = max_model_len
        self._sync = None
        self._queue: list[tuple[str, list[int], SamplingSpec]] = []  # multi-turn requests until `poll`

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[list[Completion]]:
        rows = [p for p in prompts for _ in range(spec.n)]
        width = max(len(p) for p in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for i, p in enumerate(rows):  # left padding, so generation continues every row at the end
            ids[i, width - len(p):] = torch.tensor(p)
            attn[i, width - len(p):] = 1
        torch.manual_seed(spec.seed)
        greedy = spec.temperature == 0
        out = self.model.generate(
            input_ids=ids,
            attention_mask=attn,
            do_sample=not greedy,
            temperature=None if greedy else spec.temperature,
            top_k=None,
            max_new_tokens=min(spec.max_new_tokens, self.max_model_len - width),
            pad_token_id=self.pad_id,
            output_logits=spec.logprobs,
            return_dict_in_generate=True,
        )
        new = out.sequences[:, width:]
        logprobs = None
        if spec.logprobs:
            logits = torch.stack(out.logits, dim=1).float() / max(spec.temperature, 1e-6)
            logprobs = torch.log_softmax(logits, -1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
        completions = []
        for i in range(len(rows)):
            toks = new[i].tolist()
            stop = next((j for j, t in enumerate(toks) if t in self.eos_ids), None)
            end = len(toks) if stop is None else stop + 1  # keep the first EOS, drop the padding
            lps = logprobs[i, :end].tolist() if logprobs is not None else []
            completions.append(Completion(toks[:end], lps, "length" if stop is None else "stop"))
        return [completions[k * spec.n:(k + 1) * spec.n] for k in range(len(prompts))]

    # ---- multi-turn episodes (parkrl.envs.runner): queued requests run together at `poll` ----
    def submit(self, request_id: str, prompt_ids: list[int], spec: SamplingSpec) -> None:
        self._queue.append((request_id, prompt_ids, spec))

    def abort(self, request_ids: list[str]) -> None:
        drop = set(request_ids)
        self._queue = [q for q in self._queue if q[0] not in drop]

    def poll(self) -> list[tuple[str, Completion]]:
        """Generate every queued request (one batch per distinct budget); returns them all."""
        queue, self._queue = self._queue, []
        done = []
        for budget in sorted({spec.max_new_tokens for _, _, spec in queue}):
            part = [(rid, p, spec) for rid, p, spec in queue if spec.max_new_tokens == budget]
            groups = self.generate([p for _, p, _ in part], part[0][2])
            done += [(rid, group[0]) for (rid, _, _), group in zip(part, groups)]
        return done

    def join_sync_group(self, host: str, port: int, rank: int, world_size: int, backend: str, timeout_s: float) -> None:
        self._sync = (init_sync_group(host, port, rank, world_size, backend, timeout_s), timeout_s)

    @torch.no_grad()
    def receive_weights(self, wire_metas: list) -> None:
        group, timeout_s = self._sync
        metas = [TensorMeta.from_wire(row) for row in wire_metas]
        params = self.model.state_dict()
        device = next(self.model.parameters()).device  # its own, whatever the learner's
        for name, tensor in receive_tensors(group, metas, timeout_s, device=device):
            params[name].copy_(tensor)

    def shutdown(self) -> None:
        pass


def _as_list(x) -> list[int]:
    return list(x) if isinstance(x, (list, tuple)) else [x]
