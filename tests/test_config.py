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


def test_local_runtime_runs_one_worker_per_role():
    cfg = Config()
    cfg.trainer.runtime = "local"
    cfg.resources.learner.num_workers = 2
    with pytest.raises(ConfigError, match="resources.learner.num_workers=2"):
        validate(cfg, registered_names())


def test_cli_config_errors_exit_before_any_worker_starts(tmp_path):
    import subprocess
    import sys

    def run(*args):
        return subprocess.run([sys.executable, "-m", "parkrl.train", *args, f"trainer.output_dir={tmp_path}"],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)

    typo = run("trainer.totl_steps=3")
    assert typo.returncode != 0 and "totl_steps" in typo.stderr
    sizes = run("trainer.prompts_per_step=3", "rollout.n=3", "learner.mini_batches=2")
    assert sizes.returncode == 2
    assert "learner.mini_batches=2" in sizes.stderr and "Traceback" not in sizes.stderr
    missing = run("model.path=/no/such/model")
    assert missing.returncode == 2 and "model.path='/no/such/model'" in missing.stderr


def test_colocation_and_learner_backend_problems_name_the_keys():
    cfg = load("resources.colocate=true", "resources.rollout.num_workers=2", "resources.learner.gpus_per_worker=0.5",
               "rollout.one_step_off=true", "learner.backend=deepspeed", "learner.zero_stage=1",
               "algorithm.rollout_is_cap=0.5")
    with pytest.raises(ConfigError) as e:
        validate(cfg, registered_names())
    msg = str(e.value)
    for key in ("resources.rollout.num_workers=2", "gpus_per_worker = 0.5 + 0.0 must be 1", "learner.backend=fsdp2",
                "rollout.one_step_off=true exclude", "learner.zero_stage=1", "algorithm.rollout_is_cap=0.5: 0"):
        assert key in msg, key
    ok = load("resources.colocate=true", "resources.learner.gpus_per_worker=0.5", "resources.rollout.gpus_per_worker=0.5")
    validate(ok, registered_names())  # one learner rank and one engine sharing a GPU
