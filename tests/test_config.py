"""Config: Hydra composition of recipes, overrides, and errors that name the key to fix."""
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from parkrl.algorithms import registered_names
from parkrl.config import Config, ConfigError, validate
from parkrl.train import CONF_DIR, to_config


def load(*overrides: str) -> Config:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return to_config(compose(config_name="parkrl", overrides=list(overrides)))


def test_default_recipe_is_grpo_on_embedded_smollm2():
    cfg = load()
    assert isinstance(cfg, Config)
    assert cfg.model.path == "smollm2-135m-instruct"
    assert cfg.algorithm.advantage == "grpo"
    assert cfg.data.task == "chain_sum"
    validate(cfg, registered_names())


def test_overrides_reach_typed_config():
    cfg = load("recipe=grpo", "trainer.total_steps=20", "rollout.n=4", "model.path=/some/hf/dir",
               "trainer.output_dir=/tmp/x")
    assert (cfg.trainer.total_steps, cfg.rollout.n, cfg.model.path, cfg.trainer.output_dir) == (20, 4, "/some/hf/dir", "/tmp/x")


def test_misspelled_key_is_rejected_with_its_name():
    with pytest.raises(ConfigCompositionException) as e:
        load("trainer.totl_steps=3")
    assert "totl_steps" in str(e.value.__cause__ or e.value) or "totl_steps" in str(e.value)


def test_a_plus_key_that_no_code_reads_is_rejected_like_any_unknown_key():
    for override, named in (("+trainer.totl_steps=3", ("trainer.totl_steps: no such config key (did you mean "
                                                       "trainer.total_steps?)")),
                             ("+foo.bar=1", "foo: no such config key"),
                             ("+resources.learner.cpus=2", "resources.learner.cpus: no such config key")):
        with pytest.raises(ConfigError) as e:
            load(override)
        assert named in str(e.value), override
    with pytest.raises(ConfigError, match=r"reward.models\[0\].wt: no such config key"):
        load("reward.models=[{path: a}]", "+reward.models.0.wt=3")


def test_plus_keys_go_into_free_form_dicts():
    cfg = load("+reward.args.max_chars=5", "+env.args.tools=[calculator]", "+data.task_args.size=3",
               "+resources.rollout.custom_resources.rollout_node=1", "+resources.learner.node_labels.pool=train")
    assert cfg.reward.args == {"max_chars": 5} and cfg.env.args == {"tools": ["calculator"]}
    assert cfg.data.task_args["size"] == 3
    assert cfg.resources.rollout.custom_resources == {"rollout_node": 1}
    assert cfg.resources.learner.node_labels == {"pool": "train"}


def test_wrong_type_is_rejected_with_its_key():
    with pytest.raises((ConfigCompositionException, ValidationError)) as e:
        load("trainer.total_steps=abc")
    text = str(e.value) + str(e.value.__cause__)
    assert "trainer.total_steps" in text


def test_unknown_recipe_is_rejected():
    with pytest.raises(Exception, match="recipe"):
        load("recipe=nope")


def bad(**changes) -> str:
    cfg = Config()
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        setattr(getattr(cfg, section), key, value)
    with pytest.raises(ConfigError) as e:
        validate(cfg, registered_names())
    return str(e.value)


def test_impossible_batch_sizes_name_the_keys():
    msg = bad(trainer__prompts_per_step=3, rollout__n=3, learner__mini_batches=2)
    assert "trainer.prompts_per_step" in msg and "rollout.n" in msg and "learner.mini_batches=2" in msg


def test_mini_batch_must_split_over_learner_ranks():
    cfg = Config()
    cfg.trainer.prompts_per_step, cfg.rollout.n, cfg.learner.mini_batches = 3, 2, 1
    cfg.resources.learner.num_workers = 4
    with pytest.raises(ConfigError, match="resources.learner.num_workers=4"):
        validate(cfg, registered_names())


def test_choices_and_ranges_name_the_keys():
    assert "rollout.backend='sglang'" in bad(rollout__backend="sglang")
    assert "algorithm.advantage='gea'" in bad(algorithm__advantage="gea")
    assert "learner.lr=0" in bad(learner__lr=0)
    assert "rollout.max_new_tokens=2048" in bad(rollout__max_new_tokens=2048)


def test_every_problem_is_reported_at_once():
    msg = bad(learner__lr=-1.0, rollout__n=0)
    assert "learner.lr" in msg and "rollout.n" in msg


def test_timeouts_must_nest_and_the_config_says_so():
    import inspect

    from parkrl import config

    assert "trainer.sync_timeout_s=300.0 must be below trainer.worker_timeout_s=200.0" in bad(trainer__worker_timeout_s=200.0)
    assert "sync_timeout_s must be below worker_timeout_s" in inspect.getsource(config.TrainerConfig)


def test_local_runtime_runs_one_worker_per_role():
    cfg = Config()
    cfg.trainer.runtime = "local"
    cfg.resources.learner.num_workers = 2
    with pytest.raises(ConfigError, match="resources.learner.num_workers=2"):
        validate(cfg, registered_names())


def test_local_runtime_with_gpus_is_rejected_pointing_at_ray():
    cfg = load("trainer.runtime=local", "resources.learner.gpus_per_worker=1", "resources.rollout.gpus_per_worker=1")
    with pytest.raises(ConfigError) as e:
        validate(cfg, registered_names())
    msg = str(e.value)
    assert "trainer.runtime=local places no worker on a GPU" in msg and "use trainer.runtime=ray" in msg
    assert "resources.learner.gpus_per_worker=1.0, resources.rollout.gpus_per_worker=1.0" in msg
    reward_gpu = load("trainer.runtime=local", "+reward.models=[{path: all-minilm-l6-v2, resources: {gpus_per_worker: 1}}]")
    with pytest.raises(ConfigError, match=r"but reward\.models\[0\]\.resources\.gpus_per_worker=1\.0: use trainer"):
        validate(reward_gpu, registered_names())
    validate(load("trainer.runtime=local"), registered_names())  # CPU-only is fine


@pytest.mark.parametrize("learner, rollout", [(1, 0), (0, 1)])
def test_learner_and_rollout_must_both_have_gpus_or_neither(learner, rollout):
    cfg = load(f"resources.learner.gpus_per_worker={learner}", f"resources.rollout.gpus_per_worker={rollout}")
    with pytest.raises(ConfigError) as e:
        validate(cfg, registered_names())
    assert (f"resources.learner.gpus_per_worker={float(learner)} and resources.rollout.gpus_per_worker="
            f"{float(rollout)}: the learner and the rollout engines must both have GPUs") in str(e.value)
    validate(load("resources.learner.gpus_per_worker=1", "resources.rollout.gpus_per_worker=1"), registered_names())


def test_cli_config_errors_exit_before_any_worker_starts(tmp_path):
    import subprocess
    import sys

    def run(*args):
        return subprocess.run([sys.executable, "-m", "parkrl.train", *args, f"trainer.output_dir={tmp_path}"],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)

    typo = run("trainer.totl_steps=3")
    assert typo.returncode == 2 and "totl_steps" in typo.stderr
    sizes = run("trainer.prompts_per_step=3", "rollout.n=3", "learner.mini_batches=2")
    assert sizes.returncode == 2
    assert "learner.mini_batches=2" in sizes.stderr and "Traceback" not in sizes.stderr
    missing = run("model.path=/no/such/model")
    assert missing.returncode == 2 and "model.path='/no/such/model'" in missing.stderr
    gpus = run("resources.learner.gpus_per_worker=1")  # rollout engines on CPU: no common sync backend
    assert gpus.returncode == 2 and "Traceback" not in gpus.stderr
    assert "resources.learner.gpus_per_worker=1.0 and resources.rollout.gpus_per_worker=0.0" in gpus.stderr


def test_colocation_and_learner_backend_problems_name_the_keys():
    cfg = load("resources.colocate=true", "resources.rollout.num_workers=2", "resources.learner.gpus_per_worker=0.5",
               "rollout.one_step_off=true", "learner.backend=deepspeed", "learner.zero_stage=1",
               "algorithm.rollout_is_cap=0.5")
    with pytest.raises(ConfigError) as e:
        validate(cfg, registered_names())
    msg = str(e.value)
    for key in ("resources.rollout.num_workers=2", "gpus_per_worker = 0.5 + 0.0 must be 1", "learner.backend=fsdp2",
                "rollout.one_step_off=true exclude", "learner.zero_stage=1", "algorithm.rollout_is_cap=0.5: must be >= 1"):
        assert key in msg, key
    ok = load("resources.colocate=true", "resources.learner.gpus_per_worker=0.5", "resources.rollout.gpus_per_worker=0.5")
    validate(ok, registered_names())  # one learner rank and one engine sharing a GPU


@pytest.mark.parametrize("estimator", ["grpo", "drgrpo", "rloo", "reinforce_pp_baseline"])
def test_one_sample_per_prompt_is_rejected_for_a_group_estimator(estimator):
    msg = bad(rollout__n=1, algorithm__advantage=estimator)
    assert f"rollout.n=1 with algorithm.advantage={estimator}" in msg
    assert "every advantage is 0 and nothing trains" in msg and "reinforce_pp" in msg


def test_one_sample_per_prompt_is_fine_where_no_group_is_needed():
    for estimator in ("reinforce_pp", "gae"):
        cfg = Config()
        cfg.rollout.n, cfg.algorithm.advantage = 1, estimator
        validate(cfg, registered_names())
    assert "algorithm.dynamic_sampling=true" in bad(rollout__n=1, algorithm__advantage="reinforce_pp",
                                                    algorithm__dynamic_sampling=True)


def test_a_user_estimator_declares_that_it_needs_groups():
    import torch

    from parkrl.algorithms import ADVANTAGES

    @ADVANTAGES.register("test_only_group_median", needs_groups=True)
    def group_median(rewards, group_ids, cfg):
        return torch.zeros_like(rewards)

    @ADVANTAGES.register("test_only_batch_mean")
    def batch_mean(rewards, group_ids, cfg):
        return rewards - rewards.mean()

    assert ADVANTAGES.needs_groups("test_only_group_median") and not ADVANTAGES.needs_groups("test_only_batch_mean")
    assert "algorithm.advantage=test_only_group_median" in bad(rollout__n=1, algorithm__advantage="test_only_group_median")
    cfg = Config()
    cfg.rollout.n, cfg.algorithm.advantage = 1, "test_only_batch_mean"
    validate(cfg, registered_names())



def test_env_final_reward_false_needs_no_reward_that_accepts_the_data(tmp_path):
    """With env.final_reward=false the environment alone scores: reward.cls is never called, so
    neither the data-file check nor building the default reward applies."""
    from parkrl.controller import reward_function
    from parkrl.rewards import RewardFunction

    cfg = Config()
    cfg.data.train_file, cfg.data.eval_file = str(tmp_path / "train.jsonl"), str(tmp_path / "eval.jsonl")
    cfg.env.cls, cfg.env.final_reward = "retry_env.RetryWithFeedback", False
    validate(cfg, registered_names())
    assert type(reward_function(cfg)) is RewardFunction  # stands in for is_correct (eval/accuracy) only
    cfg.reward.cls = "parkrl.rewards.MatchAnswerReward"  # one you name is built (its is_correct counts)
    assert type(reward_function(cfg)).__name__ == "MatchAnswerReward"
    cfg.reward.cls, cfg.env.final_reward = Config().reward.cls, True  # called on the final turn: must read the data
    with pytest.raises(ConfigError, match="reward.cls=parkrl.rewards.ReasoningGymReward: it scores reasoning-gym"):
        validate(cfg, registered_names())


def test_gsm8k_recipe_needs_a_training_file_and_shows_the_command():
    cfg = load("recipe=gsm8k")
    assert (cfg.reward.cls, cfg.data.eval_file) == ("parkrl.rewards.MathVerifyReward", "gsm8k-test-100")
    assert r"\boxed{}" in cfg.data.system_prompt and cfg.trainer.eval_every > 0
    with pytest.raises(ConfigError) as e:
        validate(cfg, registered_names())
    assert "data.train_file is not set" in str(e.value)
    assert "python -m parkrl.train recipe=gsm8k data.train_file=/path/to/train.parquet" in str(e.value)
    assert "docs/data.md" in str(e.value)
    validate(load("recipe=gsm8k", "data.train_file=/data/train.parquet"), registered_names())


def test_data_file_options_reach_the_typed_config():
    cfg = load("data.train_file=t.parquet", "data.eval_file=e.csv", "data.prompt_key=problem",
               "data.answer_key=reward_model.ground_truth", "data.messages_key=chat", "data.max_rows=100",
               "data.shuffle=true", "data.filter='level in [1, 2]'", "reward.cls=parkrl.rewards.MathVerifyReward")
    d = cfg.data
    assert (d.prompt_key, d.answer_key, d.messages_key) == ("problem", "reward_model.ground_truth", "chat")
    assert (d.max_rows, d.shuffle, d.filter) == (100, True, "level in [1, 2]")
    assert load('data.filter="level=easy"').data.filter == "level=easy"  # quoted: '=' inside a value
    validate(cfg, registered_names())
    default = load().data
    assert (default.prompt_key, default.answer_key, default.messages_key) == ("question", "answer", "messages")
    assert (default.max_rows, default.shuffle, default.filter) == (0, False, "")


def test_bad_data_file_options_name_the_keys():
    files = {"data__train_file": "t.jsonl", "data__eval_file": "e.jsonl", "reward__cls": "parkrl.rewards.MathVerifyReward"}
    assert "data.max_rows=-1: must be >= 0" in bad(data__max_rows=-1, **files)
    assert "data.prompt_key='': name the field of a row (default 'question')" in bad(data__prompt_key="", **files)
    message = bad(data__filter="level=easy", data__max_rows=5)
    assert ("data.filter='level=easy', data.max_rows=5: these pick rows of data.train_file and data.eval_file; with "
            "data.task='chain_sum' set data.train_size and data.eval_size instead") in message
