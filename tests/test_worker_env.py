"""The environment Ray workers get: parkrl's settings plus the driver's NCCL/CUDA tuning."""
import pytest

from parkrl.workers.cluster import forwarded_env, worker_env


def test_nccl_and_cuda_settings_are_forwarded_but_not_the_visible_devices():
    driver = {"NCCL_SOCKET_IFNAME": "eth0", "NCCL_DEBUG": "INFO", "TORCH_NCCL_BLOCKING_WAIT": "1",
              "CUDA_LAUNCH_BLOCKING": "1", "CUDA_VISIBLE_DEVICES": "0,1", "CUDA_HOME": "/usr/local/cuda",
              "HOME": "/root", "PATH": "/usr/bin", "MY_NCCL_NOTE": "x"}
    assert forwarded_env(driver) == {"NCCL_SOCKET_IFNAME": "eth0", "NCCL_DEBUG": "INFO",
                                     "TORCH_NCCL_BLOCKING_WAIT": "1", "CUDA_LAUNCH_BLOCKING": "1"}


def test_worker_env_carries_the_drivers_nccl_settings(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NCCL_IB_DISABLE", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    env = worker_env()
    assert env["NCCL_IB_DISABLE"] == "1" and "CUDA_VISIBLE_DEVICES" not in env
    assert env["TOKENIZERS_PARALLELISM"] == "false"  # parkrl's own settings stay
