"""Rollout-engine logic of the GPU path that runs on CPU: a dead vLLM engine core ends its
worker's process (so the fleet restarts it), and tensor parallelism in the config and in the
GPUs an engine reserves."""
import os
import threading
import time
from types import SimpleNamespace

import pytest

from parkrl.algorithms import registered_names
from parkrl.config import Config, ConfigError, validate
from parkrl.engines.vllm_engine import VLLMEngine
from parkrl.workers.engine import EngineWorker
from parkrl.workers.fleet import engine_resources


class _Engine:
    def __init__(self) -> None:
        self.is_dead = False

    def dead(self) -> bool:
        return self.is_dead


def _watched(engine: _Engine, monkeypatch) -> tuple[EngineWorker, list[int], threading.Thread]:
    """A worker around `engine` whose watch runs every 10 ms; os._exit records its code instead."""
    exits: list[int] = []
    worker = EngineWorker.__new__(EngineWorker)
    worker.rank, worker.engine, worker._closing = 3, engine, threading.Event()

    def fake_exit(code: int) -> None:
        exits.append(code)
        worker._closing.set()  # ends the watch, as the real one ends the process

    monkeypatch.setattr(os, "_exit", fake_exit)
    thread = threading.Thread(target=worker._watch_engine, args=(0.01,), daemon=True)
    thread.start()
    return worker, exits, thread


def test_a_dead_engine_core_ends_the_worker_process(monkeypatch, capsys):
    engine = _Engine()
    _, exits, thread = _watched(engine, monkeypatch)
    time.sleep(0.1)
    assert exits == [] and thread.is_alive()  # a live engine: still watching
    engine.is_dead = True
    thread.join(5)
    assert exits == [1]
    assert "rollout[3]: vLLM's engine core process is gone (EngineDeadError)" in capsys.readouterr().err


def test_an_engine_shut_down_on_purpose_is_not_a_death(monkeypatch):
    engine = _Engine()
    worker, exits, thread = _watched(engine, monkeypatch)
    worker._closing.set()  # what EngineWorker.shutdown does before stopping the engine
    engine.is_dead = True  # vLLM marks its client dead when shut down too
    thread.join(5)
    assert exits == [] and not thread.is_alive()


def test_vllm_engine_reads_vllms_engine_dead_flag():
    from vllm.v1.engine.core_client import BackgroundResources

    assert BackgroundResources.engine_dead is False  # the flag vLLM's engine-core monitor sets
    engine = VLLMEngine.__new__(VLLMEngine)
    resources = SimpleNamespace(engine_dead=False)
    engine.llm = SimpleNamespace(llm_engine=SimpleNamespace(engine_core=SimpleNamespace(resources=resources)))
    assert not engine.dead()
    resources.engine_dead = True
    assert engine.dead()
    engine.llm.llm_engine.engine_core = SimpleNamespace()  # engine core in this process: nothing to lose
    assert not engine.dead()
    del engine.llm  # after shutdown
    assert not engine.dead()


def _config(tp: int, gpus: float, **changes) -> Config:
    cfg = Config()
    cfg.rollout.tensor_parallel_size = tp
    cfg.resources.learner.gpus_per_worker = cfg.resources.rollout.gpus_per_worker = gpus
    for key, value in changes.items():
        section, name = key.split("__")
        setattr(getattr(cfg, section), name, value)
    return cfg


def test_tensor_parallel_engines_need_gpus_and_take_one_per_rank():
    for gpus in (0.0, 0.5, 2.0):  # a TP engine takes tp whole GPUs: gpus_per_worker counts per rank
        with pytest.raises(ConfigError, match=rf"rollout.tensor_parallel_size=2 with resources.rollout.gpus_per_worker="
                                              rf"{gpus}: .* set resources.rollout.gpus_per_worker=1 \(each engine then "
                                              rf"takes 2 GPUs\)"):
            validate(_config(2, gpus), registered_names())
    with pytest.raises(ConfigError, match=r"rollout.tensor_parallel_size=2 needs rollout.backend=vllm"):
        validate(_config(2, 1.0, rollout__backend="hf"), registered_names())
    with pytest.raises(ConfigError, match=r"rollout.backend=hf with resources.rollout.gpus_per_worker=1.0: the "
                                          r"transformers engine runs on CPU"):
        validate(_config(1, 1.0, rollout__backend="hf"), registered_names())
    with pytest.raises(ConfigError, match=r"rollout.tensor_parallel_size=0: must be >= 1"):
        validate(_config(0, 0.0), registered_names())
    cfg = _config(4, 1.0)
    validate(cfg, registered_names())
    assert engine_resources(cfg).gpus_per_worker == 4.0 and cfg.resources.rollout.gpus_per_worker == 1.0
    validate(_config(1, 0.0), registered_names())  # the CPU default
    assert engine_resources(_config(1, 0.0)).gpus_per_worker == 0.0
