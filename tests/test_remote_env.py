"""Environments as a service (env.remote=true): the same Environment subclass in an environment
server behind a gateway (parkrl.envs.server, parkrl.workers.env_service), started as the trainer
starts it (runtime=local: the servers are child processes, no Ray). Episodes run on a scripted
engine (test_multiturn.ScriptedEngine), so only the environment side differs between runs."""
import os
import socket
from dataclasses import replace
from pathlib import Path

import pytest
from test_multiturn import ScriptedEngine

from parkrl.config import Config, ConfigError
from parkrl.envs import EpisodeLimits, environment_factory
from parkrl.envs.remote import RemoteEnvironment, remote_factory
from parkrl.models import load_tokenizer
from parkrl.workers.env_service import check_env_service, env_endpoint, start_env_service

TESTS = str(Path(__file__).parent)


@pytest.fixture(scope="module")
def tok(smollm2_dir):
    return load_tokenizer(smollm2_dir)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """Two environment servers and their gateway, as a run with env.servers=2 starts them."""
    old = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join([TESTS, old]) if old else TESTS  # the user's environment module
    cfg = Config()
    cfg.trainer.runtime = "local"
    cfg.env = replace(cfg.env, remote=True, servers=2, cls="custom_env.Countdown", step_timeout_s=1.0, workers=16)
    fleet = start_env_service(cfg, tmp_path_factory.mktemp("run"))
    try:
        yield fleet, replace(cfg, env=replace(cfg.env, url=fleet.url, token_file=fleet.token_file))
    finally:
        fleet.shutdown()
        os.environ["PYTHONPATH"] = old


def episodes(tok, make_env, questions, **limits):
    turns = [tok.encode(f" answer {k}", add_special_tokens=False) + [tok.eos_token_id] for k in range(2)]
    engine = ScriptedEngine({i: [t[: 2 + i % 3] + t[-1:] for t in turns] for i in range(len(questions))})
    samples = [{"question": q} for q in questions]
    from parkrl.engines import SamplingSpec
    from parkrl.envs import run_episodes
    from parkrl.models import chat_prompt_ids

    spec = SamplingSpec(n=1, max_new_tokens=16, temperature=1.0)
    return run_episodes(engine, make_env, samples, spec, tok, EpisodeLimits(**limits),
                        lambda m: chat_prompt_ids(tok, m)), engine


def test_remote_episodes_equal_in_process_ones(tok, service):
    _, cfg = service
    questions = [f"q{i}" for i in range(6)]
    local, _ = episodes(tok, environment_factory("custom_env.Countdown", {}), questions)
    remote, _ = episodes(tok, remote_factory(env_endpoint(cfg), "custom_env.Countdown", {}), questions)
    fields = lambda ep: (ep.prompt_ids, ep.response_ids, ep.loss_mask, ep.env_reward, ep.turns,  # noqa: E731
                         ep.finish_reason, ep.info)
    assert [fields(ep) for ep in remote] == [fields(ep) for ep in local]
    assert all(ep.finish_reason == "done" and ep.turns == 2 and ep.env_reward > 0 for ep in remote)
    env = RemoteEnvironment(env_endpoint(cfg), "custom_env.Countdown", {})
    assert env.reset({"question": "x"}) == [{"role": "user", "content": "x"}]
    assert env.stop == ("</done>",)  # the class's stop strings, told by the server at reset
    env.close()


def test_a_raising_remote_step_ends_only_its_episode(tok, service):
    _, cfg = service
    make_env = remote_factory(env_endpoint(cfg), "custom_env.Countdown", {})
    eps, _ = episodes(tok, make_env, ["q0", "raise", "q2"], on_error="end_episode")
    assert [ep.finish_reason for ep in eps] == ["done", "env_error", "done"]
    assert eps[1].info == {"step_errors": 1.0}
    with pytest.raises(RuntimeError, match=r"Countdown.step raised KeyError: 'broken state'"):
        episodes(tok, make_env, ["q0", "raise"])  # env.on_error=raise names the class and the error


def test_a_hanging_remote_step_is_cut_at_the_step_timeout_and_named(tok, service, capsys):
    import time

    _, cfg = service
    t0 = time.monotonic()
    eps, _ = episodes(tok, remote_factory(env_endpoint(cfg), "custom_env.Countdown", {}), ["q0", "q1", "hang"],
                      step_timeout_s=1.0)
    assert time.monotonic() - t0 < 4.5  # the 1 s deadline, not the 5 s hang
    assert [ep.finish_reason for ep in eps] == ["done", "done", "env_timeout"]
    assert eps[2].info == {"step_timeouts": 1.0}
    assert "of sample 2 (turn 1) did not return within env.step_timeout_s=1" in capsys.readouterr().err


def test_episodes_in_flight_are_bounded_by_max_inflight(tok, service):
    """max_inflight=2 of 7 episodes: never more than 2 sessions open on the servers at once, all finish."""
    import httpx

    fleet, cfg = service
    peak = []

    class Watched(RemoteEnvironment):
        def step(self, text):
            peak.append(httpx.get(f"{fleet.url}/healthz").json())
            return super().step(text)

    eps, _ = episodes(tok, lambda: Watched(env_endpoint(cfg), "custom_env.Countdown", {}),
                      [f"q{i}" for i in range(7)], max_inflight=2)
    assert all(ep.finish_reason == "done" for ep in eps)
    open_sessions = [h["sessions"] for h in peak]  # the gateway's count of open sessions
    assert max(open_sessions) <= 2 and len(peak) == 14


def test_bad_service_settings_are_named_before_step_1(service, tmp_path):
    _, cfg = service
    assert check_env_service(cfg) is False  # Countdown needs no sandbox
    with pytest.raises(ConfigError, match=r"env.cls='custom_env.Nope'.*cannot build custom_env.Nope"):
        check_env_service(replace(cfg, env=replace(cfg.env, cls="custom_env.Nope")))
    wrong = tmp_path / "wrong_token"
    wrong.write_text("not-the-token")
    with pytest.raises(ConfigError, match=r"HTTP 401.*env.token_file does not hold a token"):
        check_env_service(replace(cfg, env=replace(cfg.env, token_file=str(wrong))))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(ConfigError, match=f"env.url='{closed}'.*cannot be reached"):
        check_env_service(replace(cfg, env=replace(cfg.env, url=closed)))
    with pytest.raises(ConfigError, match="env.remote=true: set env.servers=N"):
        from parkrl.config import validate

        validate(replace(cfg, env=replace(cfg.env, servers=0, url="")))
