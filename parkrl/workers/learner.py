"""The learner: one FSDP2 rank of the policy (and the frozen reference policy when KL is on).

The controller gives every rank an equal share of the step's samples. A rank splits its share
into `learner.mini_batches` mini-batches (one optimizer step each) and those into micro-batches
of `learner.micro_batch_size` samples (gradient accumulation). Losses are normalised by the
token count of the whole mini-batch over all ranks, so the gradient does not depend on how the
batch was cut.
"""
from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from parkrl.algorithms import KL_ESTIMATORS, LOSS_AGGREGATIONS, POLICY_LOSSES
from parkrl.batch import TrajectoryBatch
from parkrl.config import Config
from parkrl.models.loading import load_causal_lm, load_tokenizer, resolve_dtype
from parkrl.models.logprobs import PaddedBatch, ResponseLogprobs, pad_samples
from parkrl.sync.buckets import TensorMeta, metas_of, send_tensors
from parkrl.sync.group import free_port, init_sync_group, node_ip
from parkrl.workers.process import peak_rss_gib, set_torch_threads


class FSDPLearner:
    """One rank of the FSDP2 learner group. Methods are called on every rank unless noted."""

    def __init__(self, cfg: Config, model_path: str, rank: int, world_size: int) -> None:
        set_torch_threads(cfg.resources.learner.cpus_per_worker)
        self.cfg, self.model_path, self.rank, self.world_size = cfg, model_path, rank, world_size
        self.device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
        self._sync_group = None

    # ---- set-up -------------------------------------------------------------------------------
    def free_address(self) -> tuple[str, int]:
        """This worker's host and a free port on it (rendezvous of the learner and sync groups)."""
        return node_ip(), free_port()

    def setup(self, host: str, port: int) -> None:
        """Join the learner group, load and shard the policy (and reference), build the optimizer."""
        # CUDA tensors go over NCCL; the small CPU all-reduces (token counts, metrics) over gloo.
        backend = "cpu:gloo,cuda:nccl" if self.device.type == "cuda" else "gloo"
        self._owns_group = not dist.is_initialized()
        if self._owns_group:
            dist.init_process_group(
                backend, init_method=f"tcp://{host}:{port}", rank=self.rank, world_size=self.world_size,
                timeout=timedelta(seconds=self.cfg.trainer.worker_timeout_s),
            )
        elif dist.get_world_size() != 1 or self.world_size != 1:
            raise RuntimeError("a process group already exists in this process; only a 1-rank learner can share it")
        # else: runtime=local with an in-process vLLM engine, which made a 1-rank default group
        torch.manual_seed(self.cfg.trainer.seed)
        self.pad_id = load_tokenizer(self.model_path).pad_token_id
        self.policy = self._sharded_model(trainable=True)
        lc = self.cfg.learner
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=lc.lr, weight_decay=lc.weight_decay)
        self.reference = self._sharded_model(trainable=False) if self.cfg.algorithm.kl_coef > 0 else None

    def _sharded_model(self, trainable: bool) -> ResponseLogprobs:
        lm = load_causal_lm(self.model_path, torch.float32).to(self.device)
        if trainable and self.cfg.learner.gradient_checkpointing:
            lm.gradient_checkpointing_enable()
        model = ResponseLogprobs(lm, self.cfg.rollout.temperature)
        mp = MixedPrecisionPolicy(param_dtype=resolve_dtype(self.cfg.learner.dtype), reduce_dtype=torch.float32)
        layer_classes = set(getattr(lm, "_no_split_modules", None) or [])
        for module in lm.modules():
            if type(module).__name__ in layer_classes:
                fully_shard(module, mp_policy=mp)
        fully_shard(model, mp_policy=mp)
        if not trainable:
            model.eval().requires_grad_(False)
        else:
            model.train()
        return model

    # ---- logprobs and update ------------------------------------------------------------------
    def _micro_batches(self, batch: TrajectoryBatch) -> list[tuple[list[int], PaddedBatch]]:
        """Micro-batches of similar-length samples (less padding), with their row indices."""
        order = sorted(range(len(batch)), key=lambda i: len(batch.prompt_ids[i]) + len(batch.response_ids[i]))
        size = self.cfg.learner.micro_batch_size
        out = []
        for k in range(0, len(order), size):
            rows = order[k : k + size]
            padded = pad_samples([batch.prompt_ids[i] for i in rows], [batch.response_ids[i] for i in rows],
                                 [batch.loss_mask[i] for i in rows], self.pad_id)
            out.append((rows, padded.to(self.device)))
        return out

    @torch.no_grad()
    def compute_logprobs(self, batch: TrajectoryBatch, model: str = "policy") -> list[list[float]]:
        """Per-response-token logprobs of this rank's samples under "policy" or "reference"."""
        net = self.policy if model == "policy" else self.reference
        result: list[list[float]] = [[] for _ in range(len(batch))]
        for rows, mb in self._micro_batches(batch):
            logprobs, _ = net(mb)
            for i, values in zip(rows, mb.unpad(logprobs.float().cpu())):
                result[i] = values
        return result

    def update(self, batch: TrajectoryBatch) -> dict[str, float]:
        """Train on this rank's share of the step; returns step metrics summed over all ranks.

        batch fields used: "advantages" (per sample); "old_logprobs" when present, else the
        policy before the first optimizer step is the old policy (one mini-batch, one epoch);
        "ref_logprobs" when KL is on.
        """
        a, lc = self.cfg.algorithm, self.cfg.learner
        policy_loss = POLICY_LOSSES.get(a.policy_loss)
        aggregate = LOSS_AGGREGATIONS.get(a.loss_agg)
        kl_fn = KL_ESTIMATORS.get(a.kl_estimator) if a.kl_coef > 0 else None
        if "old_logprobs" not in batch and lc.epochs * lc.mini_batches > 1:
            raise ValueError("several optimizer steps per step need batch['old_logprobs']")
        self._updates = getattr(self, "_updates", 0) + 1
        gen = torch.Generator().manual_seed(self.cfg.trainer.seed * 1_000_003 + self._updates * 7919 + self.rank)
        sums = torch.zeros(8, dtype=torch.float64)  # see `names` below
        grad_norms = []
        for epoch in range(lc.epochs):
            perm = torch.randperm(len(batch), generator=gen).tolist() if epoch else list(range(len(batch)))
            shares = [perm[k :: lc.mini_batches] for k in range(lc.mini_batches)]
            for mini in (batch.select(sorted(s)) for s in shares):
                tokens = torch.tensor([float(sum(sum(m) for m in mini.loss_mask))], dtype=torch.float64)
                dist.all_reduce(tokens)  # normaliser: tokens of the whole mini-batch, all ranks
                self.optimizer.zero_grad(set_to_none=True)
                for rows, mb in self._micro_batches(mini):
                    logprobs, entropy = self.policy(mb)
                    if "old_logprobs" in mini:  # padding gets the current value: ratio 1, no inf
                        old = torch.where(mb.mask.bool(), mb.pad_rows([mini["old_logprobs"][i] for i in rows]), logprobs.detach())
                    else:
                        old = logprobs.detach()
                        rollout = mb.pad_rows([mini.rollout_logprobs[i] for i in rows])
                        sums[6] += ((old - rollout).abs() * mb.mask).sum().item()
                    adv = torch.as_tensor([float(mini["advantages"][i]) for i in rows], device=self.device)
                    out = policy_loss(logprobs, old, adv.unsqueeze(-1).expand_as(logprobs), a)
                    loss = aggregate(out.loss, mb.mask, tokens.item())
                    if kl_fn is not None:
                        ref = torch.where(mb.mask.bool(), mb.pad_rows([mini["ref_logprobs"][i] for i in rows]), logprobs.detach())
                        kl = kl_fn(logprobs, ref)
                        loss = loss + a.kl_coef * aggregate(kl, mb.mask, tokens.item())
                        sums[4] += (kl.detach() * mb.mask).sum().item()
                    (loss * self.world_size).backward()  # FSDP averages gradients over ranks
                    m = mb.mask
                    sums[0] += (out.loss.detach() * m).sum().item()
                    sums[1] += (out.clipped * m).sum().item()
                    sums[2] += (entropy * m).sum().item()
                    sums[3] += m.sum().item()
                    sums[5] += ((out.ratio.detach() - 1).abs() * m).sum().item()
                norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), lc.grad_clip)
                grad_norms.append(float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm))
                self.optimizer.step()
        dist.all_reduce(sums)
        n = max(sums[3].item(), 1.0)
        metrics = {
            "loss/policy": sums[0].item() / n,
            "loss/clip_frac": sums[1].item() / n,
            "policy/entropy": sums[2].item() / n,
            "policy/ratio_dev": sums[5].item() / n,
            "learner/grad_norm": sum(grad_norms) / len(grad_norms),
            "learner/tokens": n,
        }
        if kl_fn is not None:
            metrics["kl/ref"] = sums[4].item() / n
        if "old_logprobs" not in batch:  # first forward was the rollout policy: compare
            metrics["rollout/logprob_diff"] = sums[6].item() / (n / lc.epochs)
        return metrics

    # ---- weight sync and saving ---------------------------------------------------------------
    def _full_state_dict(self) -> dict[str, torch.Tensor]:
        """Collective: the unsharded policy weights, on rank 0's CPU (empty on other ranks)."""
        return get_model_state_dict(self.policy.lm, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def weight_metas(self) -> list:
        """Names, dtypes and global shapes of the weights as sent to the engines (wire format)."""
        dtype = resolve_dtype(self.cfg.rollout.dtype)
        return [m.to_wire() for m in metas_of(self.policy.lm.state_dict().items(), dtype)]

    def join_sync_group(self, host: str, port: int, world_size: int, backend: str) -> None:
        """Rank 0 only: join the sync group as its rank 0 (hosting its store)."""
        self._sync_group = init_sync_group(host, port, 0, world_size, backend, self.cfg.trainer.sync_timeout_s)

    def push_weights(self, wire_metas: list) -> int:
        """Collective over learner ranks: gather full weights; rank 0 broadcasts them to the
        engines. Returns bytes sent (0 on other ranks)."""
        state = self._full_state_dict()
        if self.rank != 0:
            return 0
        metas = [TensorMeta.from_wire(row) for row in wire_metas]
        missing = [m.name for m in metas if m.name not in state]
        if missing:
            raise KeyError(f"weights to sync missing from the learner's state dict: {missing[:5]}")
        tensors = [state[m.name].to(self.device) for m in metas]
        return send_tensors(self._sync_group, tensors, metas, self.cfg.trainer.sync_timeout_s)

    def save_hf(self, path: str) -> None:
        """Collective: save the policy as an HF checkpoint (weights, config, tokenizer) at `path`."""
        state = self._full_state_dict()
        if self.rank == 0:
            os.makedirs(path, exist_ok=True)
            self.policy.lm.save_pretrained(path, state_dict=state)
            load_tokenizer(self.model_path).save_pretrained(path)
        dist.barrier()

    def peak_rss_gib(self) -> float:
        return peak_rss_gib()

    def shutdown(self) -> None:
        if getattr(self, "_owns_group", False) and dist.is_initialized():
            dist.destroy_process_group()
