"""Heterogeneous placement: each role's Ray runtime_env reaches its actors, merged with the run's
own (parkrl's env_vars kept), and the checks that name `<role>.runtime_env.<key>`."""
import dataclasses
import inspect
import os

import pytest

from parkrl.algorithms import registered_names
from parkrl.config import (
    RUNTIME_ENV_KEYS,
    Config,
    ConfigError,
    RewardModelConfig,
    RoleResources,
    ServiceResources,
    validate,
)
from parkrl.workers import WorkerGroup, WorkerTimeout
from parkrl.workers.cluster import worker_env


class EnvReader:
    """A trivial worker: reports its environment and its node's labels."""

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def env(self, *names: str) -> dict[str, str | None]:
        return {n: os.environ.get(n) for n in names}

    def shutdown(self) -> None:
        pass


def ray_group(role: str, resources: RoleResources, timeout_s: float = 60.0) -> WorkerGroup:
    return WorkerGroup(role, EnvReader, resources, "ray", timeout_s, lambda r: (r,))


def test_role_runtime_env_reaches_the_actor_merged_with_the_runs_env_vars(ray_session):
    job_vars = worker_env()  # what ray_session (like parkrl's own start-up) gives every worker
    assert job_vars["VLLM_NO_USAGE_STATS"] == "1" and job_vars["VLLM_CONFIGURE_LOGGING"] == "0"
    # these come only from the job's runtime_env, not from the processes' inherited environment
    assert "VLLM_NO_USAGE_STATS" not in os.environ and "VLLM_CONFIGURE_LOGGING" not in os.environ
    names = ("PARKRL_TEST_ROLE_VAR", "VLLM_NO_USAGE_STATS", "VLLM_CONFIGURE_LOGGING", "PYTHONPATH")
    plain = ray_group("plain", RoleResources(num_workers=1, cpus_per_worker=0.1))
    role = ray_group("with_env", RoleResources(num_workers=2, cpus_per_worker=0.1, runtime_env={
        "env_vars": {"PARKRL_TEST_ROLE_VAR": "x", "VLLM_CONFIGURE_LOGGING": "1"}}))
    try:
        before = plain.call("env", *names)[0]
        seen = role.call("env", *names)
    finally:
        plain.shutdown()
        role.shutdown()
    assert before["PARKRL_TEST_ROLE_VAR"] is None  # a role without one gets nothing extra
    assert before["VLLM_NO_USAGE_STATS"] == "1"
    for env in seen:  # every rank: the role's variable, the run's kept, the role's value wins on a shared name
        assert env["PARKRL_TEST_ROLE_VAR"] == "x"
        assert env["VLLM_NO_USAGE_STATS"] == "1"
        assert env["VLLM_CONFIGURE_LOGGING"] == "1"
        assert env["PYTHONPATH"] == before["PYTHONPATH"]


def test_node_labels_no_node_carries_leave_the_role_unplaced(ray_session):
    with pytest.raises(WorkerTimeout, match=r"could not place 1 labelled worker\(s\).*resources\.labelled"):
        ray_group("labelled", RoleResources(num_workers=1, cpus_per_worker=0.1, node_labels={"pool": "no-such-pool"}), timeout_s=2)


def bad(**resources) -> Config:
    cfg = Config()
    for role, value in resources.items():
        setattr(cfg.resources, role, value)
    return cfg


def problems(cfg: Config) -> str:
    with pytest.raises(ConfigError) as e:
        validate(cfg, registered_names())
    return str(e.value)


def test_unknown_runtime_env_key_is_named_with_its_role():
    msg = problems(bad(learner=RoleResources(runtime_env={"pipp": ["x"]}),
                       env=ServiceResources(runtime_env={"workdir": "."})))
    assert "resources.learner.runtime_env.pipp: not a Ray runtime_env field (did you mean " \
           "resources.learner.runtime_env.pip?" in msg
    assert "resources.env.runtime_env.workdir: not a Ray runtime_env field" in msg
    cfg = Config()
    cfg.reward.models = [RewardModelConfig(path="all-minilm-l6-v2", resources=RoleResources(runtime_env={"condaa": "x"}))]
    assert "reward.models[0].resources.runtime_env.condaa: not a Ray runtime_env field" in problems(cfg)


def test_env_var_values_must_be_strings_and_pip_uv_conda_exclude_each_other():
    msg = problems(bad(sandbox=ServiceResources(runtime_env={"env_vars": {"N": 1, "OK": "1"}, "pip": ["a"], "uv": ["b"]})))
    assert "resources.sandbox.runtime_env.env_vars.N=1: environment variables are strings" in msg
    assert "OK" not in msg
    assert "resources.sandbox.runtime_env: give at most one of pip, uv and conda" in msg
    assert "resources.rollout.runtime_env.env_vars=['A=1']: must be a mapping" in problems(
        bad(rollout=RoleResources(runtime_env={"env_vars": ["A=1"]})))


def test_local_runtime_refuses_a_runtime_env():
    cfg = bad(rollout=RoleResources(runtime_env={"env_vars": {"A": "1"}}))
    validate(cfg, registered_names())  # fine with Ray
    cfg.trainer.runtime = "local"
    assert ("resources.rollout.runtime_env={'env_vars': {'A': '1'}}: a Ray runtime_env applies to Ray actors only, "
            "and trainer.runtime=local" in problems(cfg))


def test_runtime_env_keys_are_fields_ray_knows():
    from ray.runtime_env import RuntimeEnv

    ray_names = set(inspect.signature(RuntimeEnv.__init__).parameters) | RuntimeEnv.known_fields
    assert set(RUNTIME_ENV_KEYS) <= ray_names, set(RUNTIME_ENV_KEYS) - ray_names
    RuntimeEnv(env_vars={"A": "1"}, pip=["x"], excludes=["*.pt"])  # Ray takes what parkrl passes


def test_every_role_has_the_placement_keys():
    placement = {"custom_resources", "node_labels", "runtime_env"}
    for cls in (RoleResources, ServiceResources):
        assert placement <= {f.name for f in dataclasses.fields(cls)}, cls


def test_service_workers_carry_their_placement():
    from parkrl.workers.sandbox_service import _role

    r = _role(ServiceResources(cpus_per_worker=0.5, custom_resources={"cpu_pool": 1}, node_labels={"pool": "cpu"}), 3)
    assert (r.num_workers, r.cpus_per_worker, r.custom_resources, r.node_labels) == (3, 0.5, {"cpu_pool": 1},
                                                                                     {"pool": "cpu"})


def test_service_workers_carry_their_runtime_env():
    from parkrl.workers.sandbox_service import _role

    assert _role(ServiceResources(runtime_env={"env_vars": {"A": "1"}}), 1).runtime_env == {"env_vars": {"A": "1"}}
