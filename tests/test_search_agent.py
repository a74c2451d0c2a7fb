"""recipe=search_agent end to end: two GRPO steps on Ray with vLLM and SmolLM2, the browser's
fetches going through the gateway the run starts (sandbox.servers=1, egress to the wiki site
only), with the environment in-process and as a service (env.remote=true, env.servers=1)."""
import json
import re
import subprocess
import sys
import time

import pytest


@pytest.fixture(scope="module")
def wiki():
    proc = subprocess.Popen([sys.executable, "-m", "parkrl.sites.wiki", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline, url = time.monotonic() + 60, None
    while url is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        found = re.search(r"listening on (http://\S+)", line)
        url = found.group(1) if found else None
        assert line or proc.poll() is None, "the wiki site exited at start"
    assert url, "the wiki site did not start"
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.mark.integration
@pytest.mark.parametrize("remote", [False, True])
def test_search_agent_trains_two_steps_through_the_gateway(wiki, tmp_path, ray_session, remote):
    from hydra import compose, initialize_config_dir

    from parkrl.controller import train
    from parkrl.train import CONF_DIR, to_config

    host = wiki.removeprefix("http://")
    overrides = ["recipe=search_agent", "trainer.total_steps=2", "trainer.eval_every=0", "trainer.save_final=false",
                 "trainer.save_final_checkpoint=false", "trainer.prompts_per_step=2", "rollout.n=4",
                 "rollout.dtype=float32", "learner.dtype=float32", "rollout.kv_cache_gib=0.25",
                 "resources.learner.cpus_per_worker=1", "resources.rollout.cpus_per_worker=1", "data.train_size=20",
                 "data.eval_size=4", f"sandbox.egress_hosts=[{host}]", f"trainer.output_dir={tmp_path / 'run'}"]
    if remote:
        overrides += ["env.remote=true", "env.servers=1"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = to_config(compose(config_name="parkrl", overrides=overrides))
    cfg.env.args["tool_args"]["browser"]["search_url"] = wiki
    out = train(cfg)
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [1, 2]
    assert sum(r["env/tool_calls_mean"] for r in rows) > 0  # the model browsed (the worked example shows how)
    assert max(r["env/turns_mean"] for r in rows) > 1  # observations came back and episodes went on
    assert all(r["env/tool_errors_mean"] == 0 or r["env/tool_errors_mean"] < r["env/tool_calls_mean"] for r in rows)
