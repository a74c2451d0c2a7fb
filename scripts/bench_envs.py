"""Environment steps in-process against remote (env.remote=true): episodes/s and step latency.

    .venv/bin/python scripts/bench_envs.py [--episodes 256] [--inflight 64] [--steps 4] [--servers 1]

Run it alone on the machine (it prints numbers; it is not a test). The environment is parkrl's
own ToolEnvironment with the calculator: each step parses a tool call and evaluates it, a cheap
real step, so the numbers show what the service adds. Both modes run `--episodes` episodes,
`--inflight` at once on as many threads (as the rollout loop's env.workers threads do), each episode
reset, `--steps` tool-call steps and a final answer, then closed: first back to back ("closed
loop": the most steps/s the service sustains on these cores), then "paced", each step after a
think time (`--think-ms`, jittered +-50%) as generation spaces an episode's steps. Remote episodes go through the
service a run starts for env.servers=N: N environment servers and a gateway, child processes on
127.0.0.1 (trainer.runtime=local), the run's token. Latencies are client-side, in ms.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ENV = "parkrl.envs.ToolEnvironment"
ARGS = {"tools": ["calculator"]}
CALL = '<tool_call>{"name": "calculator", "arguments": {"expression": "37 * 41"}}</tool_call>'


def run(make_env, episodes: int, inflight: int, steps: int, think_s: float = 0.0) -> tuple[float, list[float]]:
    """(seconds, every step's latency in s) for `episodes` episodes, `inflight` at once, each
    waiting `think_s` (jittered +-50%, seeded) before each step, as generation does in a rollout."""
    import random

    def episode(i: int) -> list[float]:
        rng = random.Random(i)
        env = make_env()
        try:
            env.reset({"question": f"What is 37 * 41? ({i})"})
            times = []
            for k in range(steps + 1):
                if think_s:
                    time.sleep(think_s * rng.uniform(0.5, 1.5))
                t = time.perf_counter()
                r = env.step(CALL if k < steps else "1517")
                times.append(time.perf_counter() - t)
                assert (r.observation[0]["content"] == "1517") if k < steps else r.done, r
            return times
        finally:
            env.close()

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(inflight) as pool:
        latencies = [x for times in pool.map(episode, range(episodes)) for x in times]
    return time.perf_counter() - t0, latencies


def pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=256)
    p.add_argument("--inflight", type=int, default=64)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--servers", type=int, default=1)
    p.add_argument("--think-ms", type=float, default=500.0, help="paced phase: mean wait before each step")
    a = p.parse_args()

    from parkrl.config import Config
    from parkrl.envs import environment_factory
    from parkrl.envs.remote import remote_factory
    from parkrl.workers.env_service import env_endpoint, start_env_service

    print(f"[bench_envs] {a.episodes} episodes, {a.inflight} in flight, {a.steps} tool steps + 1 answer each; "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}", flush=True)
    cfg = Config()
    cfg.trainer.runtime = "local"
    cfg.env = replace(cfg.env, remote=True, servers=a.servers, cls=ENV, args=ARGS,
                      sessions_per_server=max(256, a.inflight))
    with tempfile.TemporaryDirectory(prefix="bench-envs-") as tmp:
        fleet = start_env_service(cfg, Path(tmp))
        try:
            cfg = replace(cfg, env=replace(cfg.env, url=fleet.url, token_file=fleet.token_file))
            modes = {"in-process": environment_factory(ENV, ARGS), "remote": remote_factory(env_endpoint(cfg), ENV, ARGS)}
            run(modes["remote"], a.inflight, a.inflight, 1)  # warm: connections, the server's imports
            phases = [("closed loop", a.episodes, 0.0),  # back to back: what the service sustains
                      ("paced", a.inflight * 2, a.think_ms / 1000)]  # with generation's pacing: what a step costs
            for phase, episodes, think_s in phases:
                results = {}
                for name, make_env in modes.items():
                    secs, lat = run(make_env, episodes, a.inflight, a.steps, think_s)
                    results[name] = lat
                    print(f"[bench_envs] {phase:11s} {name:10s}: {episodes / secs:8.1f} episodes/s  "
                          f"{len(lat) / secs:8.1f} steps/s  step p50 {pct(lat, 0.5):7.2f} ms  p99 {pct(lat, 0.99):7.2f} ms",
                          flush=True)
                added = pct(results["remote"], 0.5) - pct(results["in-process"], 0.5)
                print(f"[bench_envs] {phase}: a remote step costs {added:.2f} ms more than an in-process one at p50 "
                      f"(goal: <= 10 ms); load {os.getloadavg()[0]:.2f}", flush=True)
        finally:
            fleet.shutdown()


if __name__ == "__main__":
    main()
