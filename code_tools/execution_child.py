"""The child side of :mod:`code_tools.execution`: limit, guard, then run one generated program.

Run as ``python -I -S -B -u -X utf8 execution_child.py ROOT`` by
:func:`code_tools.execution.run_python` / ``run_doctests``, never imported.
``ROOT`` is the run's temporary folder; it holds ``config.json`` (mode,
limits, doctest settings), ``program.py`` (the generated code), for doctests
``examples.txt``, and ``work/`` (the working directory). Standard library only:
``-S`` keeps site-packages off the path.

Order matters: the limits come first (so even compiling hostile source is
bounded), then the syntax check, then the guard, then the user's code. The
verdict (one line in ``ROOT/verdict``) is written only by this file, so a
program that leaves early (``os._exit(0)``) has none and does not pass:

    ok                     the program ran to its end
    exit CODE              it raised SystemExit(CODE)
    exception NAME         it raised exception NAME
    syntax_error           it does not compile
    doctest FAILED TRIED   the doctest runner's counts

The guard is a :func:`sys.addaudithook` hook (PEP 578), which Python code
cannot remove: it refuses network sockets and name lookups, Unix sockets
outside ``ROOT``, new processes (fork, exec, spawn, subprocess, os.system),
signals to other processes, ``ctypes`` (the usual way around audit hooks),
raising resource limits, and writing, deleting, renaming or re-permissioning
anything outside ``ROOT``.
"""

import ast
import builtins
import json
import os
import resource
import signal
import socket
import sys
import traceback
import types

ROOT = os.path.realpath(sys.argv[1])
with open(os.path.join(ROOT, "config.json"), encoding="utf-8") as _file:
    CONFIG = json.load(_file)
PROGRAM = os.path.join(ROOT, "program.py")

# Events refused whatever their arguments.
_REFUSED = {
    "os.system", "os.exec", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "subprocess.Popen",
    "ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle", "ctypes.cdata",
    "resource.setrlimit", "resource.prlimit",
    "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo",
}
# Events that change the file system: ((index of a path argument, index of its dir_fd or None), ...).
# A hard link's source counts too: writing through a link inside would change the file outside.
_PATH_EVENTS = {
    "os.remove": ((0, 1),), "os.rmdir": ((0, 1),), "os.rename": ((0, 2), (1, 3)), "os.mkdir": ((0, 2),),
    "os.chmod": ((0, 2),), "os.chown": ((0, 3),), "os.link": ((0, 2), (1, 3)), "os.symlink": ((1, 2),),
    "os.truncate": ((0, None),), "os.utime": ((0, 3),), "os.chflags": ((0, None),),
    "os.setxattr": ((0, None),), "os.removexattr": ((0, None),), "shutil.rmtree": ((0, 1),),
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _limit(kind, soft, hard=None):
    """Lower ``kind`` to ``soft`` (and ``hard``, default ``soft``), never above the inherited hard limit."""
    hard = soft if hard is None else hard
    _, current = resource.getrlimit(kind)
    if current != resource.RLIM_INFINITY:
        soft, hard = min(soft, current), min(hard, current)
    resource.setrlimit(kind, (soft, hard))


def _tasks_of_user():
    """Processes and threads of this user now: RLIMIT_NPROC counts them all, not just our children."""
    uid, count = os.getuid(), 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{pid}/task"))
            except OSError:
                pass  # the process ended while we looked
    return count


def set_limits():
    _limit(resource.RLIMIT_AS, CONFIG["memory_bytes"])
    _limit(resource.RLIMIT_CPU, CONFIG["cpu_seconds"], CONFIG["cpu_seconds"] + 1)  # SIGXCPU, then SIGKILL
    _limit(resource.RLIMIT_FSIZE, CONFIG["file_bytes"])
    _limit(resource.RLIMIT_NOFILE, CONFIG["open_files"])
    _limit(resource.RLIMIT_CORE, 0)
    # Root is exempt from RLIMIT_NPROC, and for others it counts every process of the user: the
    # audit hook's fork ban is the real limit, this is the fallback where the kernel enforces it.
    if os.getuid() != 0 and os.path.isdir("/proc"):
        _limit(resource.RLIMIT_NPROC, _tasks_of_user() + CONFIG["processes"])
    # Past the file-size limit a write raises OSError (EFBIG) instead of the process being killed.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _resolve(path, dir_fd=None):
    path = os.fsdecode(os.fspath(path))
    if dir_fd is not None and dir_fd >= 0 and not os.path.isabs(path):  # os.dir_fd default: AT_FDCWD (< 0)
        path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
    return os.path.realpath(path)


def _inside_root(path, dir_fd=None):
    if isinstance(path, int):
        return True  # an open descriptor: opening it was checked (or it is a pipe or socket of our own)
    try:
        resolved = _resolve(path, dir_fd)
    except (OSError, TypeError, ValueError):
        return False
    return resolved == ROOT or resolved.startswith(ROOT + os.sep) or resolved == os.devnull


def _refuse(what):
    raise PermissionError(f"{what} is disabled in the evaluation sandbox (code_tools/execution.py)")


def _audit(event, args):
    if event in _REFUSED:
        _refuse(event)
    if event == "open":
        path, mode, flags = args
        writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & _WRITE_FLAGS)
        if writing and path is not None and not _inside_root(path):
            _refuse(f"writing outside the run's temporary folder ({path!r})")
    elif event in _PATH_EVENTS:
        for path_index, fd_index in _PATH_EVENTS[event]:
            dir_fd = args[fd_index] if fd_index is not None and fd_index < len(args) else None
            if not _inside_root(args[path_index], dir_fd):
                _refuse(f"{event} outside the run's temporary folder ({args[path_index]!r})")
    elif event == "socket.__new__":
        if args[1] != socket.AF_UNIX:
            _refuse("network access (socket.socket)")
    elif event in ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"):
        # Only Unix sockets exist here; their addresses are paths, which must lie inside ROOT
        # (a daemon's socket elsewhere, the Docker one say, is as good as the network).
        address = args[1] if event in ("socket.connect", "socket.bind") else args[-1]
        if address is not None and (not isinstance(address, (str, bytes)) or not _inside_root(address)):
            _refuse(f"{event} to {address!r}")
    elif event in ("os.kill", "os.killpg"):
        target = args[0]
        if target not in (0, os.getpid(), os.getpgid(0)):
            _refuse(f"{event} of another process ({target})")


def _verdict(text):
    VERDICT.write(text + "\n")
    VERDICT.flush()


def _compile_or_exit(tree_or_source, filename):
    try:
        return compile(tree_or_source, filename, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as error:  # ValueError: null bytes in the source
        _verdict("syntax_error")
        traceback.print_exception(type(error), error, None)
        sys.exit(1)


def _report(error):
    """Verdict and traceback of an exception from the user's code (this file's frames left out)."""
    _verdict(f"exception {type(error).__name__}")
    try:
        report = traceback.TracebackException(type(error), error, error.__traceback__)
        report.stack = traceback.StackSummary.from_list([f for f in report.stack if f.filename != __file__])
        sys.stderr.write("".join(report.format()))
    except BaseException:  # noqa: BLE001 - at the memory limit even printing can fail; the verdict is out
        pass
    sys.exit(1)


def _fresh_main():
    module = types.ModuleType("__main__")
    module.__file__, module.__builtins__ = PROGRAM, builtins
    sys.modules["__main__"] = module
    return module


def run_program(code):
    """``python program.py``: the program's namespace is a fresh ``__main__``."""
    sys.argv = [PROGRAM]
    exec(code, _fresh_main().__dict__)


def _context(qualified_name):
    """``(module, owner, name)`` of ``pkg.mod[.Class].name``: the longest importable prefix is the module."""
    import importlib

    parts = qualified_name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        owner = module
        for attribute in parts[cut:-1]:
            owner = getattr(owner, attribute)
        return module, owner, parts[-1]
    raise ImportError(f"no importable module in {qualified_name!r}; the code's context cannot be set up")


def _set_class_cell(value, owner):
    """Point the ``__class__`` cell of a method compiled in a stand-in class at the real class (for ``super()``)."""
    functions = [getattr(value, name, None) for name in ("__func__", "fget", "fset", "fdel")] + [value]
    for function in functions:
        code = getattr(function, "__code__", None)
        if code is not None and "__class__" in code.co_freevars:
            function.__closure__[code.co_freevars.index("__class__")].cell_contents = owner


def define_in_context(tree, qualified_name):
    """Define the generated function where the original lives and return the doctest globals.

    A module-level function is executed in its module's namespace (so the
    module's helpers and constants resolve) and replaces the module's
    attribute; a method is compiled inside a class of the same name (name
    mangling, ``super()``) and set on the real class. The examples then see
    the generated code however they reach it.
    """
    module, owner, name = _context(qualified_name)
    if owner is not module:
        stand_in = ast.ClassDef(name=owner.__name__, bases=[], keywords=[], body=tree.body, decorator_list=[])
        if "type_params" in ast.ClassDef._fields:
            stand_in.type_params = []
        tree = ast.Module(body=[stand_in], type_ignores=[])
        ast.fix_missing_locations(tree)
    code = _compile_or_exit(tree, PROGRAM)
    local = {}
    exec(code, module.__dict__, local)
    defined = local[owner.__name__].__dict__ if owner is not module else local
    if name not in defined:
        raise NameError(f"the generated code does not define {name!r} (it defines {sorted(defined)})")
    value = defined[name]
    if owner is not module:
        _set_class_cell(value, owner)
    setattr(owner, name, value)
    return dict(module.__dict__)


def run_doctests(tree, code):
    import doctest

    qualified_name = CONFIG["qualified_name"]
    if qualified_name:
        globs = define_in_context(tree, qualified_name)
    else:
        globs = _fresh_main().__dict__
        exec(code, globs)
        globs = dict(globs)
    examples_path = os.path.join(ROOT, "examples.txt")
    with open(examples_path, encoding="utf-8") as file:
        examples = file.read()
    test = doctest.DocTestParser().get_doctest(examples, globs, qualified_name or "generated", examples_path, 0)
    runner = doctest.DocTestRunner(verbose=False, optionflags=CONFIG["optionflags"])
    failed, tried = runner.run(test)
    _verdict(f"doctest {failed} {tried}")


def main():
    set_limits()
    try:
        with open(PROGRAM, encoding="utf-8") as file:
            source = file.read()
        tree = ast.parse(source, PROGRAM)
    except (SyntaxError, ValueError) as error:  # UnicodeDecodeError is a ValueError
        _verdict("syntax_error")
        traceback.print_exception(type(error), error, None)
        sys.exit(1)
    code = _compile_or_exit(tree, PROGRAM)  # symbol-table errors ('return' outside function) too
    os.chdir(os.path.join(ROOT, "work"))
    sys.addaudithook(_audit)
    try:
        if CONFIG["mode"] == "doctest":
            run_doctests(tree, code)
        else:
            run_program(code)
            _verdict("ok")
    except SystemExit as exit:
        _verdict(f"exit {0 if exit.code is None else exit.code if isinstance(exit.code, int) else 1}")
        raise
    except BaseException as error:  # noqa: BLE001 - every failure of the user's code is a verdict
        _report(error)


VERDICT = open(os.path.join(ROOT, "verdict"), "w", encoding="utf-8")
main()
