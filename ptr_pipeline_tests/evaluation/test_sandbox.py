"""The HumanEval sandbox (evaluation.sandbox): what a hostile program can and cannot do.

Every test that runs a program runs under each isolation this machine offers (bwrap, unshare,
rlimits); one missing here is skipped. The hostile programs go around the in-process guard
(``import posix``, a fresh ``socket``) where they test the layers below it, as an attacker would.
"""

import os
import re
import socket
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from ptr_pipeline.evaluation import sandbox
from ptr_pipeline.evaluation.sandbox import ISOLATIONS, SandboxResult, isolation, run_python

ROOT = os.geteuid() == 0
MARKER = "ptr_pipeline sandbox bootstrap"  # first line of sandbox.BOOTSTRAP, in the child's argv

FORK_BOMB = """\
import posix  # the guard took os.fork
while True:
    try:
        posix.fork()
    except OSError:
        pass
"""


@pytest.fixture(params=ISOLATIONS)
def plan(request, monkeypatch) -> str:
    """Runs the test under one isolation; skipped where this machine does not offer it."""
    chosen = sandbox._working_plan(request.param)
    if chosen is None:
        pytest.skip(f"{request.param} is not installed or does not work here")
    monkeypatch.setattr(sandbox, "_plan", lambda: chosen)
    return request.param


def _protects_our_files(plan: str) -> bool:
    return ROOT or plan == "bwrap"  # not root, unshare and rlimits run the program as us


@pytest.fixture
def open_dir():
    """A directory that anyone may enter (tmp_path's parents are private to us)."""
    with tempfile.TemporaryDirectory(prefix="ptr-sandbox-test-") as path:
        os.chmod(path, 0o755)
        yield Path(path)


def _live_sandbox_processes(since: float) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline", "create_time", "status"]):
        info = process.info
        if info["status"] == psutil.STATUS_ZOMBIE or info["create_time"] < since - 1:
            continue
        if MARKER in " ".join(info["cmdline"] or ()):
            found.append(process)
    return found


def test_a_correct_program_passes(plan):
    program = """\
import math, re
from collections import Counter

def depth(n):
    return 0 if n == 0 else 1 + depth(n - 1)

assert math.gcd(12, 18) == 6
assert re.findall(r"\\d+", "a1b22") == ["1", "22"]
assert Counter("abca")["a"] == 2
assert depth(500) == 500
print("all good")
"""
    result = run_python(program)
    assert result == SandboxResult("passed", "") and result.passed


def test_a_failing_assert_fails_with_the_assertion_error(plan):
    result = run_python(
        "def add(a, b):\n    return a - b\n\nassert add(2, 2) == 4, 'add is wrong'\n"
    )
    assert result.status == "failed" and not result.passed
    assert result.detail.splitlines()[-1] == "AssertionError: add is wrong"


def test_a_syntax_error_fails(plan):
    result = run_python("def broken(:\n    pass\n")
    assert result.status == "failed"
    assert "SyntaxError" in result.detail


def test_exit_before_the_asserts_fails(plan):
    """As in human-eval: exit() skips the tests after it, so it cannot pass."""
    result = run_python("import sys\nsys.exit(0)\nassert False\n")
    assert result.status == "failed"
    assert "SystemExit(0)" in result.detail


def test_the_program_sees_a_minimal_environment(plan, monkeypatch):
    monkeypatch.setenv("PTR_SANDBOX_SECRET", "hunter2")
    result = run_python("import os\nassert 'PTR_SANDBOX_SECRET' not in os.environ, 'leaked'\n")
    assert result.passed, result.detail


def test_a_fork_bomb_is_contained_and_cleaned_up(plan):
    start = time.time()
    processes_before = len(psutil.pids())
    peak = 0
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(run_python, FORK_BOMB, timeout_s=2, max_processes=8)
        while not future.done():  # count the bomb's processes while it runs
            peak = max(peak, len(_live_sandbox_processes(start)))
            time.sleep(0.05)
        result = future.result()
    assert result.status == "timeout"
    assert time.time() - start < 10
    assert peak <= 8 + 1  # RLIMIT_NPROC, and unshare/bwrap's own process outside it

    deadline = time.time() + 5  # the kernel ends the namespace's processes asynchronously
    while _live_sandbox_processes(start) and time.time() < deadline:
        time.sleep(0.05)
    assert _live_sandbox_processes(start) == []
    assert len(psutil.pids()) < processes_before + 20  # slack for other work on the machine
    assert run_python("assert sum(range(10)) == 45").passed
    assert subprocess.run(["true"], check=False).returncode == 0


def test_an_infinite_loop_times_out_on_the_wall_clock(plan):
    start = time.monotonic()
    result = run_python("while True:\n    pass\n", timeout_s=2)
    elapsed = time.monotonic() - start
    assert result == SandboxResult("timeout", "wall-clock limit of 2 s exceeded")
    assert 1.9 < elapsed < 4


def test_the_cpu_limit_ends_a_busy_program(plan):
    start = time.monotonic()
    result = run_python("while True:\n    pass\n", timeout_s=20, cpu_s=1)
    assert result == SandboxResult("timeout", "CPU limit of 1 s exceeded")
    assert time.monotonic() - start < 15  # 1 s of CPU, however busy the machine


@pytest.mark.parametrize(
    "program",
    [
        "b = bytearray(10 * 1024**3)\n",
        "chunks = []\nwhile True:\n    chunks.append(bytearray(1024**2))\n",
        "numbers = []\nwhile True:\n    numbers.append(len(numbers))\n",
    ],
    ids=["10GB", "growing-bytearrays", "growing-list"],
)
def test_huge_allocations_do_not_pass(plan, program):
    ours = psutil.Process()
    rss_before = ours.memory_info().rss
    start = time.monotonic()
    result = run_python(program, memory_mb=256, timeout_s=15)
    assert not result.passed
    assert result.status in ("failed", "killed")
    assert "MemoryError" in result.detail or result.status == "killed"
    assert time.monotonic() - start < 15
    assert ours.memory_info().rss < rss_before + 50 * 1024**2


def test_writes_outside_the_work_directory_are_refused(plan, tmp_path, open_dir):
    if not _protects_our_files(plan):
        pytest.skip(f"known weakness: {plan} without root runs the program as us")
    token = uuid.uuid4().hex
    private = tmp_path / "private.txt"  # a folder only we may enter
    private.write_text("original")
    readable = open_dir / "readable.txt"  # a folder anyone may enter, a file only we may write
    readable.write_text("original")
    readable.chmod(0o644)
    new_files = [
        Path(__file__).parent / f"sandbox-escape-{token}.txt",  # the repository
        Path.home() / f".sandbox-escape-{token}",
        open_dir / f"sandbox-escape-{token}.txt",
    ]
    targets = [private, readable, *new_files]
    program = f"""\
written = []
for path in {[str(path) for path in targets]!r}:
    try:
        with open(path, "a") as file:
            file.write("pwned")
        written.append(path)
    except OSError:
        pass
assert not written, f"wrote {{written}}"
"""
    try:
        result = run_python(program)
        assert result.passed, result.detail  # every write raised OSError
        assert private.read_text() == "original"
        assert readable.read_text() == "original"
        assert not any(path.exists() for path in new_files)
    finally:
        for path in new_files:
            path.unlink(missing_ok=True)


def test_the_work_directory_is_writable_and_removed(plan, open_dir, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(open_dir))
    program = "with open('notes.txt', 'w') as file:\n    file.write('scratch')\n"
    result = run_python(program + "assert open('notes.txt').read() == 'scratch'\n")
    assert result.passed, result.detail
    assert list(open_dir.iterdir()) == []


@pytest.mark.parametrize("around_the_guard", [False, True], ids=["guarded", "around-the-guard"])
def test_no_network(plan, around_the_guard):
    if around_the_guard and plan == "rlimits":
        pytest.skip("known weakness: rlimits has no network namespace")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        program = f"""\
import sys
{'sys.modules.pop("socket")' if around_the_guard else ""}
import socket
with socket.create_connection(("127.0.0.1", {port}), timeout=2) as connection:
    connection.sendall(b"escaped")
"""
        result = run_python(program, timeout_s=5)
        assert not result.passed
        if around_the_guard:  # unshare's namespace has no network; bwrap's has its own loopback
            assert re.search("Network is unreachable|Connection refused", result.detail)
        else:
            assert "import of socket halted" in result.detail
        listener.settimeout(0.2)
        with pytest.raises(TimeoutError):  # nobody connected
            listener.accept()


@pytest.mark.parametrize(
    "program",
    [
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
        "import os, signal\nos.kill({pytest}, signal.SIGKILL)\n",
        "import posix, signal\nposix.kill({pytest}, signal.SIGKILL)\n",
        "import posix, signal\nposix.kill({victim}, signal.SIGKILL)\n",
    ],
    ids=["parent", "pytest", "pytest-around-the-guard", "victim-around-the-guard"],
)
def test_the_program_cannot_kill_our_processes(plan, program):
    if "posix" in program and not ROOT and plan == "rlimits":
        pytest.skip("known weakness: rlimits without root runs the program as us")
    with subprocess.Popen(["sleep", "30"]) as victim:
        try:
            result = run_python(program.format(pytest=os.getpid(), victim=victim.pid))
            assert not result.passed
            assert victim.poll() is None
        finally:
            victim.kill()
    os.kill(os.getpid(), 0)  # and we are still here


def test_kill_everything_leaves_us_alive(plan):
    if not ROOT and plan == "rlimits":
        pytest.skip("known weakness: rlimits without root runs the program as us")
    with subprocess.Popen(["sleep", "30"]) as victim:
        try:
            run_python("import posix, signal\nposix.kill(-1, signal.SIGKILL)\n")
            assert victim.poll() is None
        finally:
            victim.kill()


def test_huge_output_is_bounded(plan):
    ours = psutil.Process()
    rss_before = ours.memory_info().rss
    stdout_flood = (
        "import sys\nline = 'x' * 10**6\nfor _ in range(500):\n    sys.stdout.write(line)\n"
    )
    assert run_python(stdout_flood).passed  # 500 MB of stdout go nowhere
    start = time.monotonic()
    result = run_python(
        "import sys\nwhile True:\n    sys.stderr.write('y' * 10**5)\n", max_file_mb=1
    )
    assert result.status == "failed"  # RLIMIT_FSIZE: EFBIG
    assert len(result.detail) <= sandbox.DETAIL_CHARS
    assert time.monotonic() - start < 5
    assert ours.memory_info().rss < rss_before + 50 * 1024**2


def test_concurrent_calls_keep_their_own_results(plan):
    programs = ["assert 1 + 1 == 2", "assert 1 + 1 == 3, 'arithmetic'"] * 4
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run_python, programs))
    assert [result.passed for result in results] == [True, False] * 4
    assert all("arithmetic" in result.detail for result in results[1::2])


def test_a_trivial_program_is_fast(plan):
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        assert run_python("pass").passed
        timings.append(time.perf_counter() - start)
    print(f"{plan}: a trivial program takes {min(timings) * 1000:.0f} ms")
    assert min(timings) < 1.0


def test_isolation_is_the_strongest_that_works_here():
    working = [name for name in ISOLATIONS if sandbox._working_plan(name) is not None]
    assert isolation() == working[0]
    assert run_python("pass").passed


def test_a_signal_is_reported_as_killed(plan):
    result = run_python("import posix, signal\nposix.kill(posix.getpid(), signal.SIGSEGV)\n")
    assert result.status == "killed"
    assert result.detail.startswith("killed by SIGSEGV")
