"""code_tools/execution.py: every way generated code can go wrong is a status, never a failed evaluator.

Limits are asserted by status, not by wall clock, except generous upper
bounds (a 1 s timeout must not take a minute).
"""

import os
import statistics
import sys
import textwrap
from pathlib import Path

import pytest

from code_tools.execution import STATUSES, ExecutionResult, has_doctests, run_doctests, run_python

GUARD = "disabled in the evaluation sandbox"


def test_a_program_that_runs_to_its_end_passes_and_its_output_comes_back():
    result = run_python("print('hello')\nassert sum(range(4)) == 6")
    assert isinstance(result, ExecutionResult) and result.status == "passed" and result.passed
    assert result.output == "hello\n" and result.returncode == 0 and 0 < result.seconds < 30


@pytest.mark.parametrize(
    "source, status",
    [
        ("assert 1 == 2, 'wrong'", "failed"),
        ("raise SystemExit(2)", "failed"),
        ("import sys; sys.exit(0)", "passed"),  # what unittest.main() does on success
        ("import os; os._exit(3)", "failed"),
        ("import os; os._exit(0)", "failed"),  # left before its end: no verdict, no pass
        ("def f(n):\n    return f(n + 1)\nf(0)", "failed"),  # RecursionError
        ("def f(:\n    pass", "syntax_error"),
        ("return 1", "syntax_error"),  # a compiler error, not a parser one
        ("x = [0] * 10**10", "memory"),
        ("x = bytearray(10**11)", "memory"),
        ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", "crashed"),
    ],
)
def test_failures_are_statuses(source, status):
    result = run_python(source, timeout=20.0)
    assert result.status == status, result.output
    assert result.status in STATUSES


def test_unbounded_recursion_under_a_raised_limit_crashes_the_child_only():
    # repr of a deeply nested list recurses in C: past the C stack it is a segmentation fault.
    source = "import sys\nsys.setrecursionlimit(10**6)\nx = []\nfor _ in range(10**6):\n    x = [x]\nrepr(x)"
    result = run_python(source, timeout=30.0)
    assert result.status in ("crashed", "memory"), result.output
    if result.status == "crashed":
        assert "SIGSEGV" in result.output


@pytest.mark.parametrize("source", ["while True:\n    pass", "import time\ntime.sleep(60)"])
def test_a_hang_is_a_timeout(source):
    result = run_python(source, timeout=1.0)
    assert result.status == "timeout" and "timed out after 1 s" in result.output
    assert result.seconds < 30


def test_network_is_refused():
    connect = run_python("import socket\nsocket.create_connection(('example.com', 80), timeout=5)")
    assert connect.status == "failed" and GUARD in connect.output
    for source in ("import socket\nsocket.socket(socket.AF_INET, socket.SOCK_STREAM)",
                   "import _socket\n_socket.socket(2, 1)",  # below the socket module
                   "import socket\nsocket.gethostbyname('localhost')",
                   "import urllib.request\nurllib.request.urlopen('http://example.com', timeout=5)"):
        result = run_python(source)
        assert result.status == "failed" and GUARD in result.output, source
    # Local Unix sockets stay: asyncio's event loop needs a socket pair.
    local = run_python("import asyncio\nasync def f():\n    return 3\nassert asyncio.run(f()) == 3")
    assert local.status == "passed", local.output


def test_files_land_in_a_temporary_folder_that_is_then_gone(tmp_path):
    source = textwrap.dedent("""
        import os, shutil
        open("out.txt", "w").write("x")
        os.makedirs("a/b")
        shutil.rmtree("a")
        print(os.getcwd())
        print(os.environ["HOME"], os.environ["TMPDIR"])
    """)
    result = run_python(source)
    assert result.status == "passed", result.output
    cwd, home_and_tmp = result.output.splitlines()
    assert Path(cwd).name == "work" and home_and_tmp == f"{cwd} {cwd}"
    assert cwd != os.getcwd() and not Path(cwd).exists() and not Path(cwd).parent.exists()


def test_writing_or_deleting_outside_the_folder_is_refused(tmp_path):
    victim = tmp_path / "keep.txt"
    victim.write_text("keep")
    for source in (f"open({str(tmp_path / 'escape.txt')!r}, 'w').write('x')",
                   f"import os\nos.remove({str(victim)!r})",
                   f"import os\nos.symlink({str(tmp_path)!r}, 'link')\nopen('link/escape.txt', 'w')",
                   f"import os\nos.chdir({str(tmp_path)!r})\nopen('escape.txt', 'w')"):
        result = run_python(source)
        assert result.status == "failed" and GUARD in result.output, source
    assert victim.read_text() == "keep" and not (tmp_path / "escape.txt").exists()


def test_processes_and_signals_to_others_are_refused():
    # Bounded even if the guard failed: at most 20 children, sleeping, killed with the process group.
    fork = "import os, time\nfor _ in range(20):\n    if os.fork() == 0:\n        time.sleep(30)\n        os._exit(0)"
    for source in (fork, "import subprocess\nsubprocess.run(['true'])", "import os\nos.system('true')",
                   "import os\nos.kill(os.getppid(), 0)",  # signal 0 only probes: harmless if it got through
                   "import ctypes", "import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))"):
        result = run_python(source)
        assert result.status == "failed" and GUARD in result.output, source


def test_environment_is_rebuilt_without_proxies_or_secrets(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("TFSUITE_SECRET", "token")
    result = run_python("import os, sys\nprint(sorted(os.environ))\nprint(any('site-packages' in p for p in sys.path))")
    names, site = result.output.splitlines()
    assert names == "['HOME', 'LANG', 'LC_ALL', 'PATH', 'TMPDIR']" and site == "False"


def test_output_is_truncated_to_its_head_and_tail():
    result = run_python("print('start')\nprint('x' * 100_000)\nprint('end')", max_output=100)
    assert result.status == "passed" and result.output.startswith("start") and result.output.rstrip().endswith("end")
    assert "bytes cut" in result.output and len(result.output) < 200


def test_bad_arguments_say_what_to_pass():
    with pytest.raises(ValueError, match="timeout must be a positive"):
        run_python("pass", timeout=0)
    with pytest.raises(ValueError, match="memory_mb must be an int of at least 64"):
        run_python("pass", memory_mb=8)
    with pytest.raises(TypeError, match="source must be str"):
        run_python(b"pass")


# --- doctests ---------------------------------------------------------------------------------------------

DOCSTRING = '''Return the n-th Fibonacci number.

>>> fib(0)
0
>>> [fib(n) for n in range(1, 8)]
[1, 1, 2, 3, 5, 8, 13]
'''
CORRECT = "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n"
WRONG = "def fib(n):\n    return n\n"


def test_has_doctests_wants_an_example_that_checks_something():
    assert has_doctests(DOCSTRING)
    assert has_doctests(">>> int('x')\nTraceback (most recent call last):\nValueError: bad")
    assert not has_doctests("Return the n-th Fibonacci number.")
    assert not has_doctests(">>> x = 1\n")  # no expected output: checks nothing
    assert not has_doctests(">>>x = 1\n1")  # malformed: no space after >>>
    assert not has_doctests("") and not has_doctests(None)


def test_doctests_pass_a_correct_function_and_fail_a_wrong_one():
    correct = run_doctests(CORRECT, DOCSTRING)
    assert correct.status == "passed" and (correct.examples, correct.failed_examples) == (2, 0), correct.output
    wrong = run_doctests(WRONG, DOCSTRING)
    assert wrong.status == "failed" and (wrong.examples, wrong.failed_examples) == (2, 1)
    assert "Expected:" in wrong.output
    # The docstring defaults to the function's own.
    documented = CORRECT.replace(":\n", f':\n    """{DOCSTRING}"""\n', 1)
    assert run_doctests(documented).status == "passed"


def test_doctests_survive_broken_and_hanging_code():
    assert run_doctests("def fib(n:\n    pass", DOCSTRING).status == "syntax_error"
    assert run_doctests("def fib(n):\n    while True:\n        pass", DOCSTRING, timeout=1.0).status == "timeout"
    assert run_doctests("import os\nos._exit(0)", DOCSTRING).status == "failed"  # no verdict
    exits = run_doctests("def fib(n):\n    raise SystemExit(0)", DOCSTRING)
    assert exits.status == "failed" and exits.failed_examples == 2
    assert run_doctests("def other(n):\n    return 0", DOCSTRING).status == "failed"  # NameError in the examples
    with pytest.raises(ValueError, match="has_doctests"):
        run_doctests(CORRECT, "Return the n-th Fibonacci number.")


def test_doctests_in_the_original_module_see_its_helpers():
    # statistics.median_low's docstring examples, against a generated median_low that uses the
    # module's own StatisticsError: qualified_name puts the code where the original lives.
    docstring = statistics.median_low.__doc__
    generated = textwrap.dedent("""
        def median_low(data):
            data = sorted(data)
            if not data:
                raise StatisticsError("no median for empty data")
            return data[(len(data) - 1) // 2]
    """)
    result = run_doctests(generated, docstring, qualified_name="statistics.median_low")
    assert result.status == "passed" and result.examples >= 2, result.output
    wrong = run_doctests(generated.replace("(len(data) - 1) // 2", "len(data) // 2"), docstring,
                         qualified_name="statistics.median_low")
    assert wrong.status == "failed"


@pytest.mark.skipif(sys.version_info < (3, 8), reason="needs the pure-Python _pydecimal")
def test_doctests_of_a_method_run_on_the_real_class():
    import _pydecimal

    docstring = _pydecimal.Context.min_mag.__doc__
    generated = "def min_mag(self, a, b):\n    a = _convert_other(a, raiseit=True)\n    return a.min_mag(b, context=self)\n"
    result = run_doctests(generated, docstring, qualified_name="_pydecimal.Context.min_mag")
    assert result.status == "passed" and result.examples >= 3, result.output
    swapped = generated.replace("a.min_mag(b", "a.max_mag(b")
    assert run_doctests(swapped, docstring, qualified_name="_pydecimal.Context.min_mag").status == "failed"
