"""Running generated Python for evaluation: one limited, guarded subprocess per program.

Functional correctness is how code generation is scored since Codex (Chen et
al. 2021, "Evaluating Large Language Models Trained on Code", section 2.3):
run the generated function against tests, count it correct if all pass. The
tests here are the docstring's own examples (:func:`run_doctests`) or any
test program (:func:`run_python`). Generated code is untrusted: a sample can
loop forever, allocate without bound, recurse until the interpreter
crashes, exit, or touch files, the network and other processes. Each of
those is a failed sample, never a failed evaluation.

Every run is a fresh interpreter (``sys.executable -I -S -B -u -X utf8``:
isolated mode, no site-packages, no bytecode written, unbuffered, UTF-8) in a
new session, started on :mod:`code_tools.execution_child`, which sets the
limits, installs the guard and then runs the code. What is isolated:

* **time**: a wall-clock ``timeout`` after which the whole process group is
  killed (SIGKILL), and RLIMIT_CPU a second above it (catching CPU burnt by
  threads); the group is killed after every run, so nothing outlives it;
* **memory**: RLIMIT_AS (``memory_mb``, default 512): a huge allocation
  raises ``MemoryError`` in the child instead of reaching the OOM killer;
* **files**: a fresh temporary folder as working directory, ``HOME`` and
  ``TMPDIR``, removed afterwards; writing, deleting, renaming, linking or
  re-permissioning anything outside it is refused (PEP 578 audit hook);
  RLIMIT_FSIZE (16 MB) per file, RLIMIT_NOFILE (64), no core dumps;
* **processes**: fork, exec, spawn, ``subprocess`` and ``os.system`` are
  refused, as are signals to other processes (so the evaluator cannot be
  killed); RLIMIT_NPROC as a second line where the kernel enforces it (not
  for root, which it exempts);
* **network**: creating any socket but a Unix one, name lookups
  (``getaddrinfo`` and so ``socket.create_connection``) and Unix sockets
  outside the folder are refused; the environment is rebuilt from scratch
  (``PATH``, ``HOME``, ``TMPDIR``, ``LANG``), so no proxies, tokens or
  ``PYTHON*`` variables reach the child;
* **output**: stdout and stderr go to one file, of which the first and last
  ``max_output / 2`` characters come back.

What is not isolated, and why this is not a security boundary against a
determined attacker: the child runs as the same user with the same view of
the file system, so it can *read* anything that user can (and print it);
the guards live in the child's own interpreter, so native code that gets
around them (a C extension, a bug in the interpreter, ``ctypes`` were it
allowed: it is refused) escapes them; there is no kernel namespace, seccomp
filter or container. A program can also write a fake verdict to the open
verdict file. Use a container or VM for code from an adversary; this is for
a model's samples.

A program **passes** only if it runs to its end (or raises ``SystemExit(0)``,
as ``unittest.main()`` does) and the process exits 0: ``os._exit(0)`` half
way does not pass. Statuses: ``passed``, ``failed`` (an exception, a failed
example, a non-zero exit), ``timeout`` (wall clock or CPU limit),
``memory`` (``MemoryError``), ``crashed`` (killed by a signal, e.g. a
segmentation fault from unbounded recursion under a raised recursion limit),
``syntax_error`` (does not compile).

Runs are independent, and the parent only waits on a child, so callers can
run several at once from a thread pool.

Example::

    from code_tools.execution import has_doctests, run_doctests, run_python

    run_python("assert sum(range(4)) == 6").status            # 'passed'
    run_python("while True: pass", timeout=1.0).status        # 'timeout'
    if has_doctests(example["docstring"]):
        result = run_doctests(generated_code, example["docstring"], qualified_name=example["qualified_name"])
        print(result.status, result.failed_examples, "/", result.examples)
"""

from __future__ import annotations

import ast
import dataclasses
import doctest
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["ExecutionResult", "STATUSES", "has_doctests", "run_doctests", "run_python"]

STATUSES = ("passed", "failed", "timeout", "memory", "crashed", "syntax_error")

_CHILD = Path(__file__).with_name("execution_child.py")
_INTERPRETER_FLAGS = ("-I", "-S", "-B", "-u", "-X", "utf8")


@dataclasses.dataclass(frozen=True)
class ExecutionResult:
    """What one run did.

    Attributes:
        status: str, one of :data:`STATUSES`.
        output: str, stdout and stderr interleaved, the middle cut beyond ``max_output`` characters.
        seconds: float, wall-clock time of the run (interpreter start included).
        returncode: int or None, the child's exit status (negative: killed by that signal); None if
            no child ran.
        examples: int, doctest examples tried (0 for :func:`run_python`).
        failed_examples: int, doctest examples that failed.
    """

    status: str
    output: str
    seconds: float
    returncode: int | None = None
    examples: int = 0
    failed_examples: int = 0

    @property
    def passed(self):
        return self.status == "passed"


def _read_output(path, max_output):
    size = path.stat().st_size
    with open(path, "rb") as file:
        if size <= max_output:
            return file.read().decode("utf-8", errors="replace")
        half = max_output // 2
        head = file.read(half)
        file.seek(size - half)
        tail = file.read()
    cut = f"\n... [{size - 2 * half} bytes cut] ...\n"
    return head.decode("utf-8", errors="replace") + cut + tail.decode("utf-8", errors="replace")


def _status(verdict, returncode, timed_out, cpu_seconds_hit):
    """The status from the child's verdict line and how it ended (see the child's docstring)."""
    if verdict == "syntax_error":
        return "syntax_error"
    if timed_out or cpu_seconds_hit:
        return "timeout"
    if verdict == "exception MemoryError":
        return "memory"
    if returncode < 0:
        return "crashed"
    if returncode != 0:
        return "failed"
    if verdict == "ok" or verdict == "exit 0":
        return "passed"
    if verdict.startswith("doctest "):
        failed, tried = map(int, verdict.split()[1:])
        return "passed" if failed == 0 and tried > 0 else "failed"
    return "failed"  # exited 0 without a verdict: it left before its end (os._exit(0))


def _check_limits(timeout, memory_mb, max_output):
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if not (isinstance(memory_mb, int) and memory_mb >= 64):
        raise ValueError(f"memory_mb must be an int of at least 64 (the interpreter itself needs ~20), got {memory_mb!r}")
    if not (isinstance(max_output, int) and max_output >= 2):
        raise ValueError(f"max_output must be an int >= 2 (characters kept), got {max_output!r}")


def _run(mode, source, *, timeout, memory_mb, max_output, examples=None, qualified_name=None, optionflags=0):
    _check_limits(timeout, memory_mb, max_output)
    cpu_seconds = math.ceil(timeout) + 1
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tfsuite-exec-", ignore_cleanup_errors=True) as folder:
        root = Path(folder)
        work = root / "work"
        work.mkdir()
        config = {
            "mode": mode, "memory_bytes": memory_mb * 2**20, "cpu_seconds": cpu_seconds,
            "file_bytes": 16 * 2**20, "open_files": 64, "processes": 8,
            "qualified_name": qualified_name, "optionflags": optionflags,
        }
        (root / "config.json").write_text(json.dumps(config), encoding="utf-8")
        (root / "program.py").write_text(source, encoding="utf-8", errors="surrogatepass")
        if examples is not None:
            (root / "examples.txt").write_text(examples, encoding="utf-8")
        env = {"PATH": os.defpath, "HOME": str(work), "TMPDIR": str(work), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        with open(root / "output", "wb") as output:
            process = subprocess.Popen(
                [sys.executable, *_INTERPRETER_FLAGS, str(_CHILD), str(root)],
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                cwd=work, env=env, start_new_session=True, close_fds=True,
            )
            timed_out = False
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                # The whole group, also after a normal exit: nothing the program started may outlive it.
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                process.wait()
        seconds = time.perf_counter() - start
        verdict_path = root / "verdict"
        lines = verdict_path.read_text(encoding="utf-8", errors="replace").splitlines() if verdict_path.exists() else []
        verdict = lines[0] if lines else ""  # the first line: a syntax error ends in SystemExit, a second line
        text = _read_output(root / "output", max_output)
        if (root / "output").stat().st_size >= config["file_bytes"]:
            text += f"\n[output reached the {config['file_bytes'] // 2**20} MiB file-size limit: later writes failed]"
    returncode = process.returncode
    status = _status(verdict, returncode, timed_out, returncode == -signal.SIGXCPU)
    if timed_out:
        text += f"\n[timed out after {timeout:g} s: process group killed]"
    elif status == "timeout":
        text += f"\n[CPU limit of {cpu_seconds} s reached]"
    elif returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        text += f"\n[killed by signal {name}]"
    tried = failed = 0
    if verdict.startswith("doctest "):
        failed, tried = map(int, verdict.split()[1:])
    return ExecutionResult(status, text, seconds, returncode, tried, failed)


def run_python(source, timeout=5.0, memory_mb=512, max_output=10_000):
    """Run ``source`` as a program (``python program.py``) in the sandbox described above.

    Args:
        source: str, a whole program: the generated code and its tests (asserts, ``unittest.main()``).
        timeout: float, wall-clock seconds before the process group is killed. Default 5.
        memory_mb: int, address-space limit in MiB. Default 512.
        max_output: int, characters of stdout + stderr kept (head and tail). Default 10000.

    Returns:
        :class:`ExecutionResult`; ``passed`` when the program ran to its end and exited 0.
    """
    if not isinstance(source, str):
        raise TypeError(f"source must be str (Python code), got {type(source).__name__}")
    return _run("program", source, timeout=timeout, memory_mb=memory_mb, max_output=max_output)


def _docstring_of(function_code):
    tree = ast.parse(function_code)
    node = next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))), None)
    return None if node is None else ast.get_docstring(node, clean=True)


def has_doctests(docstring):
    """True if ``docstring`` has a ``>>>`` example that checks something (an expected output or exception).

    An example with no expected output checks only that nothing is printed,
    which almost any code passes; a docstring whose examples do not parse
    (bad indentation after ``>>>``) has none either.
    """
    if not docstring or ">>>" not in docstring:
        return False
    try:
        examples = doctest.DocTestParser().get_examples(docstring)
    except ValueError:
        return False
    return any(example.want or example.exc_msg for example in examples)


def run_doctests(function_code, docstring=None, *, qualified_name=None, timeout=5.0, memory_mb=512,
                 optionflags=0, max_output=10_000):
    """Run a docstring's ``>>>`` examples against generated code; it passes when every example does.

    Args:
        function_code: str, the generated function (or class, or several definitions).
        docstring: str or None, the text whose examples to run (the prompt's
            docstring); default the docstring of the first definition in ``function_code``.
        qualified_name: str or None, ``module[.Class].name`` of the original
            (``"statistics.median"``, ``"fractions.Fraction.limit_denominator"``):
            the module is imported in the child, the code is defined in its
            namespace (its helpers and constants resolve) and replaces the
            original there, so examples see it however they call it. Default
            None: the code runs alone, in a fresh ``__main__``.
        timeout, memory_mb, max_output: as in :func:`run_python`.
        optionflags: int, :mod:`doctest` option flags (e.g. ``doctest.ELLIPSIS``);
            default 0, what ``python -m doctest`` uses and what the stdlib's examples are written for.

    Returns:
        :class:`ExecutionResult` with ``examples`` and ``failed_examples``.
        Inside an example every exception, ``MemoryError`` included, is that
        example failing; a hang or crash is ``timeout`` / ``crashed``.

    Raises:
        ValueError: the docstring has no example that checks anything (test with :func:`has_doctests` first).
    """
    if not isinstance(function_code, str):
        raise TypeError(f"function_code must be str (Python code), got {type(function_code).__name__}")
    if docstring is None:
        try:
            docstring = _docstring_of(function_code)
        except (SyntaxError, ValueError) as error:
            return ExecutionResult("syntax_error", f"{type(error).__name__}: {error}", 0.0)
    if not has_doctests(docstring):
        raise ValueError(
            "the docstring has no >>> example with an expected output to run; "
            "filter with has_doctests(docstring) or pass the docstring that has them")
    return _run("doctest", function_code, timeout=timeout, memory_mb=memory_mb, max_output=max_output,
                examples=docstring, qualified_name=qualified_name, optionflags=optionflags)
