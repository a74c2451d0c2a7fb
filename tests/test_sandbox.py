"""The code sandbox: each hostile program is contained, comes back as a clear observation, and
leaves the calling process (the rollout worker) and the file system as they were."""
import os
import socket
import tempfile
import time

import pytest

from parkrl.sandbox import SandboxLimits, run_python

LIMITS = SandboxLimits(cpu_s=2, wall_s=4.0, memory_mb=512, output_chars=500)


def leftovers() -> set[str]:
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("parkrl-sandbox-")}


@pytest.fixture(autouse=True)
def no_leftovers():
    before = leftovers()
    yield
    assert leftovers() == before, "the sandbox left its temporary directory behind"


def run(code: str):
    t0 = time.monotonic()
    result = run_python(code, LIMITS)
    assert time.monotonic() - t0 < LIMITS.wall_s + 3, "the parent waited past the wall limit"
    return result


def test_plain_code_runs_and_can_use_its_own_directory():
    r = run("open('notes.txt', 'w').write('kept'); import math; print(open('notes.txt').read(), math.factorial(5))")
    assert (r.exit_code, r.observation()) == (0, "kept 120")


def test_infinite_loop_is_stopped_by_the_cpu_limit():
    r = run("while True: pass")
    assert r.exit_code < 0 and "CPU time limit" in r.observation()


def test_sleeping_forever_is_stopped_by_the_wall_limit():
    r = run("import time; time.sleep(60)")
    assert r.timed_out and r.observation() == "error: the code ran too long and was stopped"


def test_fork_bomb_is_refused():
    r = run("import os\nwhile True:\n    os.fork()")
    assert r.exit_code == 1 and "starting processes is not allowed" in r.observation()
    r = run("import subprocess; subprocess.run(['sh', '-c', ':(){ :|:& };:'])")
    assert "importing _posixsubprocess is not allowed" in r.observation()  # subprocess cannot even load
    assert 'File "main.py", line 1' in r.stderr


def test_memory_bomb_hits_the_memory_limit():
    r = run("x = bytearray(3 * 1024 ** 3)\nprint('allocated')")
    assert r.exit_code == 1 and "MemoryError" in r.observation() and "allocated" not in r.stdout


def test_huge_output_is_truncated():
    r = run("print('y' * 10 ** 8)")
    assert r.truncated and len(r.stdout) == LIMITS.output_chars and r.observation().endswith("[output truncated]")


def test_writing_outside_its_directory_is_refused(tmp_path):
    target = tmp_path / "escaped.txt"
    r = run(f"open({str(target)!r}, 'w').write('x')")
    assert "writing outside the sandbox directory is not allowed" in r.observation() and not target.exists()
    r = run(f"import os; os.remove({str(tmp_path)!r})")
    assert "os.remove outside the sandbox directory is not allowed" in r.observation()


def test_reading_outside_its_directory_is_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("token-123")
    r = run(f"print(open({str(secret)!r}).read())")
    assert "reading outside the sandbox directory is not allowed" in r.observation()
    assert "token-123" not in r.stdout + r.stderr
    assert "not allowed" in run("print(open('/etc/hostname').read())").observation()


def test_network_sockets_are_refused():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        r = run(f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=1); print('connected')")
        assert "opening a network socket is not allowed" in r.observation() and "connected" not in r.stdout
    finally:
        server.close()


def test_ctypes_cannot_bypass_the_hook():
    r = run("import ctypes; ctypes.CDLL(None).system(b'echo escaped')")
    assert "ctypes is not allowed" in r.observation() and "escaped" not in r.stdout


def test_errors_come_back_as_their_last_line():
    assert run("1/0").observation() == "ZeroDivisionError: division by zero"


@pytest.mark.parametrize("code, refusal", [
    # the bootstrap's globals are reachable through frames, but hold nothing that turns the hook off
    ("import sys\ng = sys._getframe(1).f_globals\ng.clear()\nopen('/tmp/parkrl-escape', 'w')", "writing outside"),
    # monkeypatching what path checks might use
    ("import os, builtins\nos.path.realpath = lambda p: '.'\nbuiltins.any = lambda x: False\n"
     "builtins.isinstance = lambda a, b: True\nopen('/tmp/parkrl-escape', 'w')", "writing outside"),
    ("open('../../../../../tmp/parkrl-escape', 'w')", "writing outside"),
    # a directory fd would let os.open(..., dir_fd=fd) write outside
    ("import os, sysconfig\nfd = os.open(sysconfig.get_paths()['purelib'], os.O_RDONLY)", "opening a directory outside"),
    ("import os, sysconfig\nos.chdir(sysconfig.get_paths()['purelib'])", "changing to a directory outside"),
    ("import _posixsubprocess", "importing _posixsubprocess"),
    ("import os\nos.symlink('/etc', 'etc')\nprint(open('etc/hostname').read())", "making links"),
    ("import gc\nprint(len(gc.get_objects()))", "inspecting objects"),
])
def test_known_bypasses_are_refused(code, refusal):
    r = run(code)
    assert r.exit_code == 1 and f"{refusal}" in r.observation(), r.observation()
    assert not os.path.exists("/tmp/parkrl-escape")


def test_normal_library_code_still_works():
    code = ("import collections, dataclasses, json, statistics, typing\n"
            "P = collections.namedtuple('P', 'x y')\nprint(json.dumps(P(1, 2)._asdict()), statistics.mean([1, 2, 3]))")
    assert run(code).observation() == '{"x": 1, "y": 2} 2'
