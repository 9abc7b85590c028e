"""The HumanEval execution sandbox: run untrusted Python source and report whether it passed.

Generated code is hostile until proven otherwise. ``run_python(program)`` runs the program in a
process of its own, in a fresh temporary directory (its working directory, removed afterwards),
and reports ``passed`` (it ran to its end and exited 0), ``failed`` (an exception, ``exit()``
or a nonzero status), ``timeout`` (the wall-clock or CPU limit) or ``killed`` (another signal).

The layers, outermost first:

1. Another user. When we are root the child runs as ``nobody`` (uid/gid 65534, no
   supplementary groups), dropped by ``subprocess.Popen(user=..., group=...)`` before the exec.
   Root ignores RLIMIT_NPROC, so without this a fork bomb is not contained; as ``nobody`` the
   program cannot write (or read) root's private files, nor signal our processes. Not being root,
   the child keeps our uid. The interpreter is ours if ``nobody`` can run it, else the system's
   (ours may live in /root, which ``nobody`` cannot enter).
2. Namespaces, the strongest that this machine allows (``isolation()`` says which; probed once
   per process by running a trivial program; each missing tool or refused namespace falls back):

   - ``"bwrap"`` (bubblewrap, ``apt-get install bubblewrap``): new user, PID, network, IPC, UTS
     and cgroup namespaces (``--unshare-all``) and a file system of its own: a read-only root with
     ``/usr`` and the interpreter's prefix bound read-only, fresh ``/proc`` and ``/dev``, a
     16 MiB tmpfs at ``/tmp``, and the temporary directory (as ``/sandbox``): only those two are
     writable. The network namespace holds nothing but its own loopback.
   - ``"unshare"`` (util-linux): new user, network, PID and IPC namespaces
     (``unshare --user --map-root-user --net --pid --ipc --fork --kill-child``). No network at all
     (the loopback is down). The file system is the host's, seen with layer 1's permissions.
   - ``"rlimits"``, the fallback where neither works (for instance under Docker's default
     seccomp profile): layers 1, 3 and 4 only.

   In both namespaces the child is the PID namespace's init: when it ends, the kernel kills
   every process left in the namespace. As an init ignores signals it does not handle (SIGXCPU
   included), the bootstrap stays the init and runs the program in a child of its own, and
   reports a signal that ended it as exit status 128 + number (as bwrap does).
3. Resource limits, set by the child on itself before the program runs: RLIMIT_CPU (SIGXCPU at
   ``cpu_s``, SIGKILL a second later), RLIMIT_AS (``memory_mb``; allocations beyond it raise
   MemoryError), RLIMIT_NPROC (``max_processes``), RLIMIT_FSIZE (``max_file_mb`` per file, stderr
   included), no core files. The wall clock (``timeout_s``) is watched from here: past it the
   child's process group, its own session, is killed, and with it the namespace. The interpreter
   runs isolated and without site-packages (``python -I -S``: the stdlib only, no PYTHON*
   variables, no user site, not the project's packages) in a minimal environment. Stdout goes to
   /dev/null; stderr to an unlinked temporary file bounded by RLIMIT_FSIZE, of which only the
   tail is read.
4. A guard in the child, after ``reliability_guard`` in OpenAI human-eval's
   ``human_eval/execution.py`` (https://github.com/openai/human-eval): the destructive ``os``,
   ``shutil`` and ``subprocess`` functions are set to None (human-eval's list, less ``getcwd``,
   which ``tempfile`` and ``os.path.abspath`` need, plus the exec/spawn family, ``_exit``,
   ``setsid`` and ``setpgid``), and ``socket``, ``resource``, ``psutil`` and the debuggers cannot
   be imported. Normal code (``import math``, ``re``, recursion, ...) is unaffected. Like
   human-eval's, it is no security boundary (``import posix`` reaches the real functions); it
   stops accidents. As in human-eval, a program that calls ``exit()``/``sys.exit()``, and so
   skips the asserts after it, fails.

Each call has its own directory, files and process group, and no ``preexec_fn`` runs: calls from
several threads at once are safe.

Known weaknesses:

- ``rlimits`` has no network isolation: a program that goes around the guard reaches whatever
  the host reaches. Processes that leave our process group (``posix.setsid()``) outlive a
  timeout until their CPU limit ends them (or forever, if they sleep).
- Not being root, ``unshare`` and ``rlimits`` run the program with our uid: it can write every
  file we can and signal every process of ours. Only ``bwrap`` protects our files then.
- ``unshare`` and ``rlimits`` show the host's file system: the program reads whatever ``nobody``
  may read, and may write the world-writable directories (``/tmp``, ``/dev/shm``). ``unshare``'s
  ``/proc`` lists the host's processes (it cannot signal them).
- Disk use is bounded per file (RLIMIT_FSIZE) and by the time limit, not in total.
- Memory is bounded per process: up to ``max_processes`` processes of ``memory_mb`` each (no
  cgroup). With ``rlimits`` as root, RLIMIT_NPROC counts every process of ``nobody`` on the
  machine, concurrent sandboxes included.
- ``posix._exit(0)`` ends a program early with status 0, which passes.
"""

import contextlib
import functools
import os
import pwd
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ISOLATIONS = ("bwrap", "unshare", "rlimits")  # in order of preference
DETAIL_CHARS = 500
SANDBOX_DIR = "/sandbox"  # the temporary directory's path inside bwrap
TMP_MB = 16  # the size of the tmpfs at /tmp inside bwrap
UNSHARE = ["--user", "--map-root-user", "--net", "--pid", "--ipc", "--fork", "--kill-child"]
ENVIRONMENT = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1"}

# Runs in the child (python -I -S -c BOOTSTRAP cpu_s memory_mb max_processes max_file_mb): limits,
# guard, then the program in program.py, as __main__.
BOOTSTRAP = """\
# ptr_pipeline sandbox bootstrap
import resource, sys
cpu_s, memory_mb, max_processes, max_file_mb = map(int, sys.argv[1:5])
MB = 1024 * 1024
for limit, soft, hard in (
    (resource.RLIMIT_CPU, cpu_s, cpu_s + 1),
    (resource.RLIMIT_AS, memory_mb * MB, memory_mb * MB),
    (resource.RLIMIT_NPROC, max_processes, max_processes),
    (resource.RLIMIT_FSIZE, max_file_mb * MB, max_file_mb * MB),
    (resource.RLIMIT_CORE, 0, 0),
):
    ceiling = resource.getrlimit(limit)[1]  # a limit can only come down
    if ceiling != resource.RLIM_INFINITY:
        soft, hard = min(soft, ceiling), min(hard, ceiling)
    resource.setrlimit(limit, (soft, hard))

import os
if os.getpid() == 1:  # a PID namespace's init ignores signals (even SIGXCPU): stay its init
    child = os.fork()
    if child:
        code = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
        os._exit(128 - code if code < 0 else code)  # a signal as 128 + number, as bwrap does

import builtins, faulthandler, shutil, subprocess
faulthandler.disable()
for name in (
    "kill", "killpg", "system", "popen", "putenv", "fork", "forkpty", "setuid", "_exit",
    "execl", "execle", "execlp", "execlpe", "execv", "execve", "execvp", "execvpe",
    "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe",
    "posix_spawn", "posix_spawnp", "remove", "removedirs", "rmdir", "unlink", "rename",
    "renames", "replace", "truncate", "chmod", "fchmod", "lchmod", "chown", "fchown", "lchown",
    "lchflags", "chroot", "chdir", "fchdir", "setsid", "setpgid",
):
    if hasattr(os, name):
        setattr(os, name, None)
shutil.rmtree = shutil.move = shutil.chown = None
subprocess.Popen = None
builtins.help = builtins.exit = builtins.quit = None
for name in ("socket", "resource", "psutil", "ipdb", "joblib", "tkinter"):
    sys.modules[name] = None

with open("program.py", encoding="utf-8") as file:
    code = compile(file.read(), "program.py", "exec")
try:
    exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
except SystemExit as stop:
    sys.exit(f"SystemExit({stop.code!r}): the program must run to its end to pass")
"""


@dataclass(frozen=True)
class SandboxResult:
    status: str  # "passed" | "failed" | "timeout" | "killed"
    detail: str  # the tail of stderr (<= DETAIL_CHARS) or the limit that was hit

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def run_python(
    program: str,
    *,
    timeout_s: float = 10.0,
    cpu_s: int = 10,
    memory_mb: int = 1024,
    max_processes: int = 32,
    max_file_mb: int = 16,
) -> SandboxResult:
    """Run untrusted Python source in its own process and report whether it exited 0."""
    limits = (cpu_s, memory_mb, max_processes, max_file_mb)
    return _run(_plan(), program, timeout_s, limits)


def isolation() -> str:
    """Which isolation this machine gives: 'bwrap', 'unshare' or 'rlimits' (module docstring)."""
    return _plan().isolation


@dataclass(frozen=True)
class _Plan:
    isolation: str  # one of ISOLATIONS
    python: str  # the interpreter that runs the program

    def command(self, workdir: str) -> list[str]:
        python = [self.python, "-I", "-S", "-c", BOOTSTRAP]
        if self.isolation == "bwrap":
            return ["bwrap", *self._bwrap_arguments(workdir), "--", *python]
        if self.isolation == "unshare":
            return ["unshare", *UNSHARE, *python]
        return python

    def _bwrap_arguments(self, workdir: str) -> list[str]:
        # No --new-session: Popen's start_new_session already leaves the program without a
        # terminal, and in our process group it dies with it. --as-pid-1: BOOTSTRAP is the init.
        arguments = ["--unshare-all", "--die-with-parent", "--as-pid-1", "--cap-drop", "ALL"]
        arguments += ["--ro-bind", "/usr", "/usr"]
        for name in ("/bin", "/lib", "/lib64", "/sbin"):  # symlinks into /usr on merged-/usr
            if os.path.islink(name):
                arguments += ["--symlink", os.readlink(name), name]
            elif os.path.isdir(name):
                arguments += ["--ro-bind", name, name]
        prefix = str(Path(os.path.realpath(self.python)).parents[1])
        if prefix != "/usr" and not prefix.startswith("/usr/"):
            arguments += ["--ro-bind", prefix, prefix]
        arguments += ["--proc", "/proc", "--dev", "/dev"]
        arguments += ["--size", str(TMP_MB * 1024 * 1024), "--tmpfs", "/tmp"]
        arguments += ["--bind", workdir, SANDBOX_DIR, "--chdir", SANDBOX_DIR]
        return [*arguments, "--remount-ro", "/"]


def _interpreters() -> list[str]:
    """Ours first; then the system's, which ``nobody`` can run where ours lives in /root."""
    candidates = [os.path.realpath(sys.executable), "/usr/local/bin/python3", "/usr/bin/python3"]
    found = [path for path in candidates if os.access(path, os.X_OK)]
    return list(dict.fromkeys(found))


def _plan() -> _Plan:
    """The strongest isolation that runs a trivial program here."""
    for isolation in ISOLATIONS:
        plan = _working_plan(isolation)
        if plan is not None:
            return plan
    raise RuntimeError(
        "the sandbox cannot run Python here: no interpreter starts in it (as root, the program"
        " runs as nobody, who must be able to run the interpreter and enter the temporary folder)"
    )


@functools.cache
def _working_plan(isolation: str) -> _Plan | None:
    """The first interpreter that runs a trivial program under this isolation (probed once)."""
    if isolation != "rlimits" and shutil.which(isolation) is None:
        return None
    for python in _interpreters():
        plan = _Plan(isolation, python)
        if _run(plan, "pass", 10.0, (10, 1024, 32, 16)).passed:
            return plan
    return None


def _sandbox_user() -> dict:
    """Popen arguments that drop root to nobody; none when we are not root."""
    if os.geteuid() != 0:
        return {}
    try:
        nobody = pwd.getpwnam("nobody")
        uid, gid = nobody.pw_uid, nobody.pw_gid
    except KeyError:
        uid = gid = 65534
    return {"user": uid, "group": gid, "extra_groups": []}


def _run(
    plan: _Plan, program: str, timeout_s: float, limits: tuple[int, int, int, int]
) -> SandboxResult:
    user = _sandbox_user()
    workdir = tempfile.mkdtemp(prefix="ptr-sandbox-")
    try:
        Path(workdir, "program.py").write_text(program, "utf-8", errors="surrogatepass")
        if user:
            os.chown(workdir, user["user"], user["group"])
        with tempfile.TemporaryFile() as stderr:
            try:
                child = subprocess.Popen(
                    [*plan.command(workdir), *map(str, limits)],
                    cwd=workdir,
                    env=ENVIRONMENT,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    start_new_session=True,
                    **user,
                )
            except OSError as error:
                return SandboxResult("failed", f"could not start the sandbox: {error}")
            finished = _wait_for_exit(child, timeout_s)
            with contextlib.suppress(ProcessLookupError):  # whatever the program left running
                os.killpg(child.pid, signal.SIGKILL)
            returncode = child.wait()
            tail = _tail(stderr)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if not finished:
        return SandboxResult("timeout", f"wall-clock limit of {timeout_s:g} s exceeded")
    return _result(plan, returncode, tail, cpu_s=limits[0])


def _wait_for_exit(child: subprocess.Popen, timeout_s: float) -> bool:
    """Whether the child exited within timeout_s. It stays unreaped (a zombie), so its pid, and
    with it the number of its process group, cannot be reused before we kill that group."""
    try:
        pidfd = os.pidfd_open(child.pid)
    except (AttributeError, OSError):  # not Linux >= 5.3: wait and reap (a tiny reuse race)
        try:
            child.wait(timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(timeout_s * 1000))
    finally:
        os.close(pidfd)


def _tail(file) -> str:
    """The end of a file: at most DETAIL_CHARS characters, from the start of a line."""
    size = file.seek(0, os.SEEK_END)
    file.seek(max(0, size - 4 * DETAIL_CHARS))
    text = file.read().decode("utf-8", errors="replace").strip()
    if len(text) > DETAIL_CHARS:
        text = text[-DETAIL_CHARS:]
        if "\n" in text:
            text = text.split("\n", 1)[1]
    return text


def _result(plan: _Plan, returncode: int, tail: str, cpu_s: int) -> SandboxResult:
    number = -returncode if returncode < 0 else None
    if plan.isolation != "rlimits" and returncode > 128:  # a namespace's init reports a signal
        number = returncode - 128  # as 128 + number (the program's own exit() ends in 1)
    if number == signal.SIGXCPU:
        return SandboxResult("timeout", f"CPU limit of {cpu_s} s exceeded")
    if number is not None:
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        detail = f"killed by {name}" + (f": {tail}" if tail else "")
        return SandboxResult("killed", detail[:DETAIL_CHARS])
    if returncode == 0:
        return SandboxResult("passed", tail)
    return SandboxResult("failed", tail or f"exit status {returncode}")
