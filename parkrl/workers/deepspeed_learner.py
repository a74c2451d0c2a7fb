"""The DeepSpeed learner backend (`learner.backend=deepspeed`): ZeRO stage 2 (optimizer state and
gradients sharded) or 3 (weights too), per `learner.zero_stage`, with torch's AdamW.

Gradient accumulation is left to parkrl (`managed_gradient_accumulation: false`): a rank runs
as many micro-batches as its token budget needs and `step()` is the boundary, so DeepSpeed's
batch-size keys are placeholders. Checkpoints are DeepSpeed's own (per-rank ZeRO shards); they
resume at the same learner world size. Each rank loads the whole model before ZeRO-3
partitions it (no `zero.Init`), so a rank must hold the full model at start-up.
"""
from __future__ import annotations

import contextlib
import math
import os

import torch

from parkrl.models.lora import plain_names
from parkrl.workers.learner import Learner


def _deepspeed():
    """Import DeepSpeed, with an error that says how to install it."""
    try:
        import deepspeed
    except ImportError as e:
        raise ImportError("learner.backend=deepspeed needs DeepSpeed: pip install 'parkrl[deepspeed]' "
                          "(or bash scripts/setup.sh deepspeed)") from e
    return deepspeed


class DeepSpeedLearner(Learner):
    """One rank of the DeepSpeed ZeRO learner group."""

    def _ds_config(self) -> dict:
        lc = self.cfg.learner
        conf = {
            "train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,  # parkrl accumulates
            "managed_gradient_accumulation": False,
            "gradient_clipping": lc.grad_clip,
            "zero_optimization": {"stage": lc.zero_stage},
            "zero_force_ds_cpu_optimizer": False,  # torch's AdamW, like the FSDP2 backend
            "steps_per_print": 2**31 - 1, "wall_clock_breakdown": False,
        }
        if self.compute_dtype == torch.bfloat16:  # bf16 compute; gradients summed and reduced in fp32, as FSDP2
            conf["bf16"] = {"enabled": True}
            conf["data_types"] = {"grad_accum_dtype": "fp32"}
            conf["communication_data_type"] = "fp32"
        return conf

    def _wrap(self, model: torch.nn.Module, lr: float | None) -> tuple[torch.nn.Module, object]:
        optimizer = None
        if lr is not None:
            trainable = [p for p in model.parameters() if p.requires_grad]  # LoRA: the adapters only
            optimizer = self._adamw(trainable, lr)
        elif self.cfg.learner.zero_stage < 3:  # a frozen model has nothing to shard below stage 3
            return model.to(self.compute_dtype), None  # the policy's compute dtype
        # DeepSpeed reads the local device index from the launcher's env; a Ray actor sees only its own GPU(s).
        os.environ.setdefault("LOCAL_RANK", str(self.device.index or 0))
        engine, ds_optimizer, _, _ = _deepspeed().initialize(model=model, optimizer=optimizer, config=self._ds_config())
        return engine, ds_optimizer

    def _backward(self, model, optimizer: object, loss: torch.Tensor) -> None:
        model.backward(loss * self.world_size, scale_wrt_gas=False)  # ZeRO averages gradients over ranks

    def _zero_grad(self, model, optimizer: object) -> None:
        model.zero_grad()

    def _step(self, model, optimizer: object) -> float:
        model.step()
        norm = model.get_global_grad_norm()
        norm = float(norm) if norm is not None else math.nan
        if not model.was_step_applied():  # ZeRO skips a step whose gradient norm is not finite
            return math.nan if math.isfinite(norm) else norm
        return norm

    def _policy_lm(self) -> torch.nn.Module:
        return self.policy.module.lm

    def _gathered(self, params: list[torch.nn.Parameter]):
        """Collective under ZeRO-3: the full `params` inside the block (a no-op below stage 3)."""
        if self.cfg.learner.zero_stage < 3:
            return contextlib.nullcontext()
        return _deepspeed().zero.GatheredParameters(params, modifier_rank=None)

    def _full_state_dict(self) -> dict[str, torch.Tensor]:
        lm = self._policy_lm()
        state: dict[str, torch.Tensor] = {}
        for prefix, module in lm.named_modules():  # one module's weights gathered at a time
            own = list(module.named_parameters(recurse=False))
            with self._gathered([p for _, p in own]):
                if self.rank == 0:
                    for name, p in own:
                        state[f"{prefix}.{name}" if prefix else name] = p.detach().to("cpu", copy=True)
        if self.rank == 0:  # a tied output head is listed under both modules' names, like state_dict()
            for name, b in lm.named_buffers():
                state[name] = b.detach().to("cpu", copy=True)
            keys = lm.state_dict(keep_vars=True).keys()
            state = {k: state[k] for k in keys}
        return self._merged(state)

    def _full_state_dict_metas(self) -> dict[str, torch.Tensor]:
        metas = {}
        for name, t in self._policy_lm().state_dict(keep_vars=True).items():
            shape = getattr(t, "ds_shape", t.shape)  # ZeRO-3 keeps a partition; ds_shape is the full one
            metas[name] = torch.empty(shape, dtype=t.dtype, device="meta")
        return dict(plain_names(metas.items()))

    def _save_train_state(self, path: str) -> None:
        for name, (engine, _) in self._trainables().items():
            engine.save_checkpoint(path, tag=name, save_latest=False)

    def _load_train_state(self, path: str) -> None:
        for name, (engine, _) in self._trainables().items():
            if not os.path.isdir(os.path.join(path, name)):
                raise FileNotFoundError(f"{path} has no DeepSpeed checkpoint for the {name}")
            load_path, _ = engine.load_checkpoint(path, tag=name, load_optimizer_states=True,
                                                  load_lr_scheduler_states=False)
            if load_path is None:
                raise RuntimeError(f"DeepSpeed could not load the {name} from {path}")

