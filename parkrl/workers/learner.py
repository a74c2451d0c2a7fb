"""The learner: one data-parallel rank of the policy, plus the frozen reference policy when KL is on and
the critic (value model) when the advantage estimator needs one (PPO's GAE).

The critic lives on the learner's ranks rather than in a group of its own: it has the policy's
size and batch, trains in the same micro-batch loop, and on a small box a second group would
only add processes and batch transfers. A separate critic group is worth it when the critic is
much larger than the policy.

The controller gives every rank an equal share of the step's samples. A rank splits its share
into `learner.mini_batches` mini-batches (one optimizer step each) and those into micro-batches
of `learner.micro_batch_size` samples (gradient accumulation). Losses are normalised by the
token count of the whole mini-batch over all ranks, so the gradient does not depend on how the
batch was cut. Samples whose loss has no gradient (advantage 0 on every token, with no KL or
entropy term and no critic: GRPO groups whose samples all scored the same) still count in that
normaliser but are not computed (`learner/skipped_samples`).

`Learner` holds everything that does not depend on how the weights are sharded: micro-batches,
losses, metrics, the weight sync. A backend (`FSDPLearner` in parkrl.workers.fsdp_learner,
`DeepSpeedLearner` in parkrl.workers.deepspeed_learner) wraps the models and owns backward,
the optimizer step, full state dicts and checkpoints. `parkrl.workers.fleet` picks one by
`learner.backend`.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator
from datetime import timedelta

import torch
import torch.distributed as dist

from parkrl.algorithms import (
    ADVANTAGES,
    KL_ESTIMATORS,
    LOSS_AGGREGATIONS,
    POLICY_LOSSES,
    LossNorm,
    logprob_diff_sum,
    resolve_mode,
    rollout_correction,
    rollout_kl,
)
from parkrl.batch import TrajectoryBatch
from parkrl.config import Config
from parkrl.models.loading import load_causal_lm, load_tokenizer, resolve_dtype
from parkrl.models.lora import add_lora, merged_state, plain_name
from parkrl.models.response import (
    PaddedBatch,
    ResponseLogprobs,
    ResponseValues,
    SharedPromptBatch,
    pad_samples,
    share_prompts,
)
from parkrl.plugins import import_plugins
from parkrl.sync.buckets import TensorMeta, metas_of, send_tensors, tied_names
from parkrl.sync.process_group import close_sync_group, free_port, init_sync_group, node_ip
from parkrl.workers.microbatch import plan_micro_batches, split_to_count
from parkrl.workers.process import peak_rss_gib, role_device, set_torch_threads


def check_sync_names(metas: list[TensorMeta], state: dict[str, torch.Tensor]) -> None:
    """Every weight the engines expect (aliases aside) is in the learner's `state`."""
    missing = [m.name for m in metas if m.name not in state and not m.alias_of]
    if missing:
        raise KeyError(f"weights to sync missing from the learner's state dict: {missing[:5]}")


_STATS = ("policy_loss", "clipped", "entropy", "ratio_dev", "tokens", "kl", "logprob_diff", "value_loss",
          "value_clipped", "critic_grad_norm", "nonfinite", "is_weight", "is_capped", "is_masked", "rollout_kl",
          "skipped")


class Learner:
    """One rank of the learner group. Methods are called on every rank unless noted.
    Subclasses implement the hooks marked "backend"."""

    def __init__(self, cfg: Config, model_path: str, rank: int, world_size: int) -> None:
        set_torch_threads(cfg.resources.learner.cpus_per_worker)
        import_plugins(cfg.trainer.imports)
        self.cfg, self.model_path, self.rank, self.world_size = cfg, model_path, rank, world_size
        self.device = role_device(cfg.resources.learner.gpus_per_worker, "resources.learner.gpus_per_worker")
        self.compute_dtype = resolve_dtype(cfg.learner.dtype, on_gpu=self.device.type == "cuda")
        self._sync_group = None
        # Until the engines report the dtype they compute in, assume rollout.dtype resolved here.
        self.resolve_rollout_correction(str(resolve_dtype(cfg.rollout.dtype, on_gpu=cfg.resources.rollout.gpus_per_worker > 0)))

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
        lc, a = self.cfg.learner, self.cfg.algorithm
        self.policy, self.optimizer = self._wrap(self._load(ResponseLogprobs), lc.lr)
        self.reference = None
        if a.kl_coef > 0:
            self.reference = self._wrap(self._load(ResponseLogprobs, trainable=False), None)[0]
        self.critic = self.critic_optimizer = None
        if ADVANTAGES.uses_critic(a.advantage):
            self.critic, self.critic_optimizer = self._wrap(self._load(ResponseValues), lc.critic_lr)

    def resolve_rollout_correction(self, engine_dtype: str) -> str:
        """`algorithm.rollout_correction` with `auto` resolved against this rank's compute dtype
        and the engines' (`engine_dtype`, as they report it); used from here on. Returns it."""
        self.correction = resolve_mode(self.cfg.algorithm.rollout_correction, str(self.compute_dtype), engine_dtype,
                                       self.cfg.rollout.one_step_off)
        return self.correction

    def _load(self, head: type, trainable: bool = True) -> torch.nn.Module:
        """The HF model in fp32 under its head (`ResponseLogprobs` or `ResponseValues`), with LoRA
        adapters and gradient checkpointing as configured; train mode, or frozen eval mode."""
        lm = load_causal_lm(self.model_path, torch.float32).to(self.device)
        lc = self.cfg.learner
        if trainable and head is ResponseLogprobs and lc.lora_rank > 0:
            lm = add_lora(lm, lc.lora_rank, lc.lora_alpha, lc.lora_targets)
        if trainable and lc.gradient_checkpointing:
            lm.gradient_checkpointing_enable()
        model = head(lm, self.cfg.rollout.temperature) if head is ResponseLogprobs else head(lm)
        return model.train() if trainable else model.eval().requires_grad_(False)

    # ---- backend hooks ------------------------------------------------------------------------
    def _wrap(self, model: torch.nn.Module, lr: float | None) -> tuple[torch.nn.Module, object]:
        """Backend: shard `model`; with `lr`, also build its AdamW. Returns (callable model,
        optimizer handle passed back to `_backward`/`_step`; None when frozen)."""
        raise NotImplementedError

    def _backward(self, model: torch.nn.Module, optimizer: object, loss: torch.Tensor) -> None:
        """Backend: accumulate the gradient of `loss` (ranks' gradients are averaged)."""
        raise NotImplementedError

    def _zero_grad(self, model: torch.nn.Module, optimizer: object) -> None:
        """Backend: clear accumulated gradients before a mini-batch."""
        raise NotImplementedError

    def _step(self, model: torch.nn.Module, optimizer: object) -> float:
        """Backend: clip to learner.grad_clip and take an optimizer step; returns the global
        gradient norm before clipping. A non-finite norm means the step was skipped (every rank)."""
        raise NotImplementedError

    def _full_state_dict(self) -> dict[str, torch.Tensor]:
        """Backend, collective: the unsharded policy weights (LoRA adapters merged in), on rank
        0's CPU (empty on other ranks)."""
        raise NotImplementedError

    def _policy_lm(self) -> torch.nn.Module:
        """Backend: the policy's HF model, unwrapped (for its config and save_pretrained)."""
        raise NotImplementedError

    def _adamw(self, params: list[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
        """AdamW over `params`, fused (one kernel over all tensors: 0.09 s against 0.94 s per step
        for 128M parameters on this repo's 2-core CPU)."""
        return torch.optim.AdamW(params, lr=lr, weight_decay=self.cfg.learner.weight_decay, fused=True)

    def _merged(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        lc = self.cfg.learner
        return merged_state(state, lc.lora_alpha / lc.lora_rank) if lc.lora_rank > 0 and state else state

    # ---- logprobs and update ------------------------------------------------------------------
    def _micro_batches(self, batch: TrajectoryBatch) -> list[tuple[list[int], PaddedBatch | SharedPromptBatch]]:
        """Collective: micro-batches of similar-length samples (parkrl.workers.microbatch), with their
        row indices; the same number on every rank. With `learner.share_prompts` a group's
        samples go together and its prompt runs once per micro-batch (parkrl.models.response)."""
        lc = self.cfg.learner
        prompts, rlens = batch.prompt_ids, batch.response_lengths.tolist()
        lengths = [len(p) + r for p, r in zip(prompts, rlens)]
        keys = [(len(p), p, r) for p, r in zip(prompts, rlens)] if lc.share_prompts else None
        plans = plan_micro_batches(lengths, lc.micro_batch_size, lc.max_tokens_per_micro_batch, keys)
        count = torch.tensor([len(plans)])
        dist.all_reduce(count, op=dist.ReduceOp.MAX)  # every rank runs as many passes (collectives)
        out = []
        for rows in split_to_count(plans, int(count)):
            index = torch.as_tensor(rows, dtype=torch.long)
            args = ([prompts[i] for i in rows], batch.response_ids[index], [rlens[i] for i in rows],
                    batch.loss_mask[index], self.pad_id)
            mb = pad_samples(*args)
            if lc.share_prompts:
                packed = share_prompts(*args)
                # Worth it when it saves a quarter of the tokens; long packed rows would also lose
                # the fused causal attention kernels to the block mask.
                if packed.input_ids.numel() <= 0.75 * mb.input_ids.numel() and packed.input_ids.shape[1] <= 4096:
                    mb = packed
            out.append((rows, mb.to(self.device)))
        return out

    @torch.no_grad()
    def per_token(self, batch: TrajectoryBatch, model: str = "policy") -> torch.Tensor:
        """Per-response-token values of this rank's samples as an [n, T] float32 tensor in the
        batch's layout (0 on padding): logprobs under "policy" or "reference", or the critic's
        state values ("critic")."""
        net = {"policy": self.policy, "reference": self.reference, "critic": self.critic}[model]
        result = torch.zeros(batch.response_ids.shape, dtype=torch.float32)
        for rows, mb in self._micro_batches(batch):
            out = net(mb)
            values = (out if model == "critic" else out[0]).float().cpu()
            valid = mb.valid.cpu()
            result[torch.as_tensor(rows, dtype=torch.long), : values.shape[1]] = torch.where(valid, values, 0.0)
        return result

    def update(self, batch: TrajectoryBatch) -> dict[str, float]:
        """Train on this rank's share of the step; returns step metrics summed over all ranks.

        batch fields used: "advantages" (per sample, or per token for GAE); "old_logprobs" when
        present, else the policy before the first optimizer step is the old policy (one
        mini-batch, one epoch); "ref_logprobs" when KL is in the loss; "values" and "returns"
        when there is a critic.
        """
        lc = self.cfg.learner
        if "old_logprobs" not in batch and lc.epochs * lc.mini_batches > 1:
            raise ValueError("several optimizer steps per step need batch['old_logprobs']")
        self._updates = getattr(self, "_updates", 0) + 1
        gen = torch.Generator().manual_seed(self.cfg.trainer.seed * 1_000_003 + self._updates * 7919 + self.rank)
        stats = dict.fromkeys(_STATS, 0.0)
        self._is_weight_max = 0.0
        grad_norms = []
        for epoch in range(lc.epochs):
            order = torch.randperm(len(batch), generator=gen).tolist() if epoch else list(range(len(batch)))
            for share in (order[k :: lc.mini_batches] for k in range(lc.mini_batches)):
                mini = batch.select(sorted(share))
                norm = self._loss_norm(mini)  # every sample counts in the normaliser, computed or not
                mini = mini.select(self._rows_with_gradient(mini, stats))
                for model, optimizer in self._trainables().values():
                    self._zero_grad(model, optimizer)
                for rows, mb in self._micro_batches(mini):
                    self._backward(self.policy, self.optimizer, self._loss(mini, rows, mb, norm, stats))
                    if self.critic is not None:
                        self._backward(self.critic, self.critic_optimizer, self._value_loss(mini, rows, mb, norm, stats))
                norm_p = self._step(self.policy, self.optimizer)
                if math.isfinite(norm_p):
                    grad_norms.append(norm_p)
                else:  # a NaN/inf loss: the step was skipped on every rank alike
                    stats["nonfinite"] += 1 / self.world_size  # the norm is global, so each rank counts it
                if self.critic is not None:
                    stats["critic_grad_norm"] += self._step(self.critic, self.critic_optimizer)
        return self._step_metrics(stats, grad_norms, on_policy_forward="old_logprobs" not in batch)

    def _rows_with_gradient(self, mini: TrajectoryBatch, stats: dict[str, float]) -> list[int]:
        """Collective: the rows of `mini` whose loss can have a gradient; the others are not computed.

        With no KL or entropy term in the loss and no critic, a sample whose advantage is 0 on
        every trained token (a GRPO/RLOO group whose samples all scored the same) adds exactly 0
        to the gradient, so leaving it out changes nothing but the time; the normaliser still
        counts it. A policy loss registered with `needs_zero_advantage_rows=True` computes every
        sample. Every rank keeps as many rows as the rank with the most (topping up with
        zero-gradient rows), so all run the same passes; at least one row runs."""
        a = self.cfg.algorithm
        everything = list(range(len(mini)))
        if (self.critic is not None or a.entropy_coef > 0 or (a.kl_coef > 0 and a.kl_in == "loss")
                or POLICY_LOSSES.needs_zero_advantage_rows(a.policy_loss)):
            return everything
        adv, trained = mini["advantages"], mini.loss_mask != 0
        if adv.dim() == 1:  # one per sample
            live_rows = (adv != 0) & trained.any(1)
        else:  # one per token
            live_rows = ((adv != 0) & trained).any(1)
        live = live_rows.nonzero().flatten().tolist()
        most = torch.tensor([max(len(live), 1)])
        dist.all_reduce(most, op=dist.ReduceOp.MAX)
        flat = sorted(set(everything) - set(live))
        keep = sorted(live + flat[: max(0, int(most) - len(live))])
        stats["skipped"] += len(mini) - len(keep)
        return keep

    def _loss_norm(self, mini: TrajectoryBatch) -> LossNorm:
        """Token and sample counts of the whole mini-batch, summed over all ranks."""
        trained = mini.loss_mask.count_nonzero(1)  # samples with no trained token do not count
        sizes = torch.tensor([float(trained.sum()), float((trained > 0).sum())], dtype=torch.float64)
        dist.all_reduce(sizes)
        return LossNorm(tokens=sizes[0].item(), sequences=sizes[1].item(), max_new_tokens=self.cfg.rollout.max_new_tokens)

    def _loss(self, mini: TrajectoryBatch, rows: list[int], mb: PaddedBatch | SharedPromptBatch, norm: LossNorm,
              stats: dict[str, float]) -> torch.Tensor:
        """The loss of one micro-batch (policy loss, KL, entropy bonus); adds to `stats`."""
        a = self.cfg.algorithm
        logprobs, entropy = self.policy(mb, entropy_grad=a.entropy_coef > 0)
        m = mb.mask

        def padded(field: str) -> torch.Tensor:  # padding gets the current value: ratio 1, KL 0
            return torch.where(m.bool(), mb.rows_of(mini[field], rows), logprobs.detach())

        rollout = mb.rows_of(mini.rollout_logprobs, rows)
        if "old_logprobs" in mini:
            old = padded("old_logprobs")
        else:  # the policy before this update: the one that generated the batch (unless one step off)
            old = logprobs.detach()
            stats["logprob_diff"] += logprob_diff_sum(old, rollout, m).item()
        advantages = mini["advantages"]
        if advantages.dim() == 1:  # one per sample, broadcast over its tokens
            adv = advantages[torch.as_tensor(rows)].to(self.device).unsqueeze(-1).expand_as(logprobs)
        else:  # one per token (GAE)
            adv = mb.rows_of(advantages, rows)
        out = POLICY_LOSSES.get(a.policy_loss)(logprobs, old, adv, m, a)
        token_loss = out.loss
        stats["rollout_kl"] += (rollout_kl(old, rollout) * m).sum().item()
        if self.correction != "off":  # the engine sampled these tokens: reweight towards the learner's old policy
            fix = rollout_correction(old, rollout, m, self.correction, a)
            token_loss = token_loss * fix.weights
            stats["is_weight"] += (fix.weights * m).sum().item()
            stats["is_capped"] += fix.capped.sum().item()
            stats["is_masked"] += fix.masked.sum().item()
            self._is_weight_max = max(self._is_weight_max, float(torch.where(m.bool(), fix.weights, 0.0).max()))
        aggregate = LOSS_AGGREGATIONS.get(a.loss_agg)
        loss = aggregate(token_loss, m, norm)
        if a.kl_coef > 0 and a.kl_in == "loss":
            kl = KL_ESTIMATORS.get(a.kl_estimator)(logprobs, padded("ref_logprobs"))
            loss = loss + a.kl_coef * aggregate(kl, m, norm)
            stats["kl"] += (kl.detach() * m).sum().item()
        if a.entropy_coef > 0:
            loss = loss - a.entropy_coef * aggregate(entropy, m, norm)
        stats["policy_loss"] += (out.loss.detach() * m).sum().item()
        stats["clipped"] += (out.clipped * m).sum().item()
        stats["entropy"] += (entropy.detach() * m).sum().item()
        stats["ratio_dev"] += ((out.ratio.detach() - 1).abs() * m).sum().item()
        stats["tokens"] += m.sum().item()
        return loss

    def _value_loss(self, mini: TrajectoryBatch, rows: list[int], mb: PaddedBatch | SharedPromptBatch, norm: LossNorm,
                    stats: dict[str, float]) -> torch.Tensor:
        """Clipped value loss: 0.5 * max((V - R)^2, (clip(V, V_old +- value_clip) - R)^2)."""
        a = self.cfg.algorithm
        values = self.critic(mb)
        old = mb.rows_of(mini["values"], rows)
        returns = mb.rows_of(mini["returns"], rows)
        clipped = old + (values - old).clamp(-a.value_clip, a.value_clip)
        unclipped_err, clipped_err = (values - returns) ** 2, (clipped - returns) ** 2
        stats["value_loss"] += (0.5 * torch.maximum(unclipped_err, clipped_err).detach() * mb.mask).sum().item()
        stats["value_clipped"] += ((clipped_err > unclipped_err).float() * mb.mask).sum().item()
        return a.value_coef * 0.5 * LOSS_AGGREGATIONS.get("token-mean")(torch.maximum(unclipped_err, clipped_err), mb.mask, norm)

    def _step_metrics(self, stats: dict[str, float], grad_norms: list[float], on_policy_forward: bool) -> dict[str, float]:
        """Per-token means over every rank's tokens (all epochs) of the accumulated stats."""
        totals = torch.tensor([stats[k] for k in _STATS], dtype=torch.float64)
        dist.all_reduce(totals)
        t = dict(zip(_STATS, totals.tolist()))
        n = max(t["tokens"], 1.0)
        metrics = {
            "loss/policy": t["policy_loss"] / n,
            "loss/clip_frac": t["clipped"] / n,
            "policy/entropy": t["entropy"] / n,
            "policy/ratio_dev": t["ratio_dev"] / n,
            "learner/grad_norm": sum(grad_norms) / max(len(grad_norms), 1),
            "learner/nonfinite_updates": round(t["nonfinite"]),  # optimizer steps skipped
            "learner/tokens": n / self.cfg.learner.epochs,  # computed tokens: zero-gradient samples are skipped
            "learner/skipped_samples": t["skipped"] / self.cfg.learner.epochs,
        }
        if self.cfg.algorithm.kl_coef > 0 and self.cfg.algorithm.kl_in == "loss":
            metrics["kl/ref"] = t["kl"] / n
        if self.critic is not None:
            metrics["loss/value"] = t["value_loss"] / n
            metrics["critic/value_clip_frac"] = t["value_clipped"] / n
            metrics["critic/grad_norm"] = t["critic_grad_norm"] / max(len(grad_norms), 1) / self.world_size
        if on_policy_forward:  # one epoch, one mini-batch: compared on every token once
            metrics["rollout/logprob_diff"] = t["logprob_diff"] / n
        weight_max = torch.tensor([self._is_weight_max])
        dist.all_reduce(weight_max, op=dist.ReduceOp.MAX)
        metrics["rollout/kl"] = t["rollout_kl"] / n  # k3 of the learner's old policy against the engine's
        if self.correction != "off":
            metrics["rollout/is_weight_mean"] = t["is_weight"] / n
            metrics["rollout/is_weight_max"] = weight_max.item()
            if self.correction in ("tis", "seq_tis"):
                metrics["rollout/is_capped_frac"] = t["is_capped"] / n
            else:
                metrics["rollout/is_masked_frac"] = t["is_masked"] / n
        return metrics

    # ---- weight sync and saving ---------------------------------------------------------------
    def weight_metas(self, dtype: str | None = None) -> list:
        """Rank 0 only: names, dtypes and global shapes of the weights as sent to the engines
        (wire format). They travel in the engines' dtype, `dtype` as the engines report it
        (default: rollout.dtype resolved here): the learner's fp32 master weights are cast on
        the way, so a bf16 engine gets half the bytes and exactly what vLLM's own cast gave."""
        dtype = getattr(torch, dtype) if dtype else resolve_dtype(self.cfg.rollout.dtype,
                                                                  on_gpu=self.cfg.resources.rollout.gpus_per_worker > 0)
        # A tied output head is named too (vLLM on CPU keeps its own repacked copy of it) but
        # travels once: the engines receive it under both names.
        tied = {plain_name(name): plain_name(source) for name, source in tied_names(self._policy_lm()).items()}
        return [m.to_wire() for m in metas_of(list(self._full_state_dict_metas().items()), dtype, tied)]

    def _full_state_dict_metas(self) -> dict[str, torch.Tensor]:
        """Tensors (any placement) with the names, dtypes and global shapes of the synced weights."""
        raise NotImplementedError

    def join_sync_group(self, host: str, port: int, world_size: int, backend: str) -> None:
        """Rank 0 only: join the sync group as its rank 0 (hosting its store)."""
        close_sync_group(self._sync_group)  # the group before an engine restart
        self._sync_group = None
        self._sync_group = init_sync_group(host, port, 0, world_size, backend, self.cfg.trainer.sync_timeout_s)

    def push_weights(self, wire_metas: list) -> int:
        """Collective over learner ranks: gather full weights; rank 0 broadcasts them to the
        engines. Returns bytes sent (0 on other ranks)."""
        metas = [TensorMeta.from_wire(row) for row in wire_metas]
        tensors = self._weights_to_send(metas)
        try:
            return 0 if self.rank != 0 else send_tensors(self._sync_group, tensors, metas,
                                                         self.cfg.trainer.sync_timeout_s)
        finally:
            for _ in tensors:  # every rank runs every gather, in order, even when the send failed
                pass

    def _weights_to_send(self, metas: list[TensorMeta]) -> Iterator[torch.Tensor | None]:
        """Collective: the full weight for each meta, in order, on this rank's device (None for an
        alias, which does not travel). Here from one gathered state dict; a backend may gather
        each weight as it is taken instead."""
        state = self._full_state_dict()
        if self.rank != 0:
            return
        check_sync_names(metas, state)
        for m in metas:
            yield None if m.alias_of else state.pop(m.name).to(self.device)

    def save_hf(self, path: str) -> None:
        """Collective: save the policy as an HF checkpoint (weights, config, tokenizer) at `path`."""
        state = self._full_state_dict()
        if self.rank == 0:
            os.makedirs(path, exist_ok=True)
            self._policy_lm().save_pretrained(path, state_dict=state)
            load_tokenizer(self.model_path).save_pretrained(path)
        dist.barrier()

    # ---- checkpoints --------------------------------------------------------------------------
    def _trainables(self) -> dict[str, tuple[torch.nn.Module, object]]:
        nets = {"policy": (self.policy, self.optimizer)}
        if self.critic is not None:
            nets["critic"] = (self.critic, self.critic_optimizer)
        return nets

    def save_checkpoint(self, path: str) -> None:
        """Collective: write this rank's shards of the policy/critic and their optimizers to
        `path` (a directory every rank can reach), plus this rank's counters and RNG state."""
        self._save_train_state(path)
        extra = {"updates": getattr(self, "_updates", 0), "torch_rng": torch.get_rng_state(),
                 "backend": self.cfg.learner.backend}
        if self.device.type == "cuda":
            extra["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        torch.save(extra, os.path.join(path, f"rank{self.rank}.pt"))

    def load_checkpoint(self, path: str) -> None:
        """Collective: restore what `save_checkpoint` wrote."""
        own = os.path.join(path, f"rank{self.rank}.pt")
        extra = torch.load(own if os.path.exists(own) else os.path.join(path, "rank0.pt"), weights_only=True)
        saved_by = extra.get("backend", "fsdp2")
        if saved_by != self.cfg.learner.backend:
            raise ValueError(f"checkpoint {path} was written by learner.backend={saved_by}; resume with that "
                             f"backend (now learner.backend={self.cfg.learner.backend}) or trainer.resume=never")
        self._load_train_state(path)
        self._updates = int(extra["updates"])
        torch.set_rng_state(extra["torch_rng"])
        if self.device.type == "cuda" and "cuda_rng" in extra:
            torch.cuda.set_rng_state(extra["cuda_rng"], self.device)
        # The optimizer state came with the checkpoint's hyper-parameters; the config's win, so
        # a changed learner.lr (reported by the controller) takes effect.
        lc = self.cfg.learner
        for (model, optimizer), lr in zip(self._trainables().values(), (lc.lr, lc.critic_lr)):
            for group in optimizer.param_groups:
                group["lr"], group["weight_decay"] = lr, lc.weight_decay

    def _save_train_state(self, path: str) -> None:
        """Backend, collective: this rank's model and optimizer shards of `_trainables()` to `path`."""
        raise NotImplementedError

    def _load_train_state(self, path: str) -> None:
        """Backend, collective: restore what `_save_train_state` wrote."""
        raise NotImplementedError

    def peak_rss_gib(self) -> float:
        return peak_rss_gib()

    def shutdown(self) -> None:
        if getattr(self, "_owns_group", False) and dist.is_initialized():
            dist.destroy_process_group()

