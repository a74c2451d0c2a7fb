"""A worker's device follows the GPUs its role was given, not whether CUDA is visible: Ray 2.60
no longer hides a GPU node's GPUs from actors that asked for none."""
import pytest
import torch

from parkrl.config import Config, RewardModelConfig, RoleResources
from parkrl.workers.learner import Learner
from parkrl.workers.process import role_device
from parkrl.workers.reward_model import RewardModelWorker

KEY = "resources.learner.gpus_per_worker"


@pytest.fixture
def cuda_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process sees CUDA (device 0 current), as a worker on a GPU node does."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture(autouse=True)
def keep_threads(monkeypatch: pytest.MonkeyPatch):
    """Workers' constructors set torch's thread count and OMP_NUM_THREADS: restore both."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_a_role_without_gpus_stays_on_cpu_where_cuda_is_visible(cuda_visible):
    assert role_device(0.0, KEY) == torch.device("cpu")


@pytest.mark.parametrize("gpus", [1.0, 0.5])
def test_a_role_with_gpus_takes_the_current_cuda_device(cuda_visible, gpus):
    assert role_device(gpus, KEY) == torch.device("cuda", 0)


def test_a_role_given_gpus_without_cuda_fails_naming_its_key(no_cuda):
    with pytest.raises(RuntimeError, match=r"resources\.learner\.gpus_per_worker=1\.0.*CUDA is not available"):
        role_device(1.0, KEY)
    assert role_device(0.0, KEY) == torch.device("cpu")


@pytest.mark.parametrize("gpus, device", [(0.0, torch.device("cpu")), (1.0, torch.device("cuda", 0))])
def test_learner_device_follows_resources_learner(cuda_visible, gpus, device):
    cfg = Config()
    cfg.resources.learner.gpus_per_worker = gpus
    assert Learner(cfg, "unused", rank=0, world_size=1).device == device


def test_reward_model_on_a_gpu_node_without_gpus_runs_on_cpu(cuda_visible):
    worker = RewardModelWorker(RewardModelConfig(path="all-minilm-l6-v2", batch_size=2), rank=0)
    assert worker.device == torch.device("cpu")
    assert next(worker.model.parameters()).device == torch.device("cpu")
    assert len(worker.score(["What is 2 + 3?"], ["5"])) == 1


def test_reward_model_given_gpus_without_cuda_names_its_key(no_cuda):
    spec = RewardModelConfig(path="all-minilm-l6-v2", resources=RoleResources(gpus_per_worker=1))
    with pytest.raises(RuntimeError, match=r"reward\.models\[\]\.resources\.gpus_per_worker=1"):
        RewardModelWorker(spec, rank=0)


@pytest.mark.parametrize("gpus, dtype", [(0.0, torch.float32), (1.0, torch.bfloat16)])
def test_auto_dtype_follows_the_role_device_not_cuda_visibility(cuda_visible, monkeypatch, gpus, dtype):
    """On a GPU node whose CPU has no native bf16, a CPU learner computes in fp32 under `auto`
    (it used to pick bf16 because CUDA was visible), and its rollout correction resolves from that."""
    import parkrl.models.loading as loading
    from parkrl.models import resolve_dtype

    monkeypatch.setattr(loading.Path, "read_text", lambda self, *a, **k: "flags: fpu avx2")
    assert resolve_dtype("auto") == torch.bfloat16  # the driver's view: CUDA visible
    assert resolve_dtype("auto", on_gpu=False) == torch.float32
    cfg = Config()
    cfg.resources.learner.gpus_per_worker = cfg.resources.rollout.gpus_per_worker = gpus
    learner = Learner(cfg, "unused", rank=0, world_size=1)
    assert learner.compute_dtype == dtype
    assert learner.correction == ("off" if dtype == torch.float32 else "tis")
