"""Runs inside the sandbox child: ``python -I -B runner.py`` in the temp working directory,
with a nonce on stdin.

Installs an audit hook (PEP 578) that refuses, for the rest of the process: any socket, any new
process (fork, exec, spawn, subprocess, os.system), loading native code with ctypes, and opening
or deleting/renaming a path for writing outside the working directory. Then executes
``solution.py`` and each test of ``tests.json`` in one namespace, and prints
``NONCE passed total`` as its last line. Standard library only; no tunesmith import.
"""

from __future__ import annotations

import json
import os
import sys

CWD = os.path.realpath(os.getcwd())
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
BLOCKED = (
    "socket.",
    "subprocess.",
    "os.fork",
    "os.forkpty",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.system",
    "os.kill",
    "os.killpg",
    "ctypes.",
    "pty.",
    "_posixsubprocess",
)
PATH_WRITES = ("os.remove", "os.rmdir", "os.rename", "shutil.rmtree", "os.chmod", "os.chown")


def _inside(path: object) -> bool:
    if isinstance(path, int):
        return True  # an already-open descriptor
    if isinstance(path, bytes):
        path = path.decode(errors="replace")
    if not isinstance(path, (str, os.PathLike)):
        return False
    full = os.path.realpath(os.path.join(CWD, os.fspath(path)))
    return full == CWD or full.startswith(CWD + os.sep)


def _writes(mode: object, flags: object) -> bool:
    if isinstance(mode, str):
        return any(m in mode for m in "wax+")
    return isinstance(flags, int) and bool(flags & WRITE_FLAGS)


def _hook(event: str, args: tuple[object, ...]) -> None:
    if event.startswith(BLOCKED):
        raise PermissionError(f"sandbox: {event} is not allowed")
    flags = args[2] if len(args) > 2 else None
    if event == "open" and args and _writes(args[1], flags) and not _inside(args[0]):
        raise PermissionError(f"sandbox: writing outside the working directory: {args[0]}")
    if event in PATH_WRITES and args:
        paths = args[:2] if event == "os.rename" else args[:1]
        if not all(_inside(p) for p in paths if isinstance(p, (str, bytes, os.PathLike))):
            raise PermissionError(f"sandbox: {event} outside the working directory")


def main() -> None:
    nonce = sys.stdin.readline().strip()  # consumed here: the solution cannot read it
    with open("solution.py") as fh:
        solution = fh.read()
    with open("tests.json") as fh:
        tests = json.load(fh)
    sys.addaudithook(_hook)
    namespace: dict[str, object] = {"__name__": "__main__"}
    passed = 0
    try:
        exec(compile(solution, "solution.py", "exec"), namespace)
    except BaseException as e:  # any failure of the solution fails every test
        print(f"solution raised {type(e).__name__}: {e}", file=sys.stderr)
        tests = tests if isinstance(tests, list) else [tests]
        print(f"{nonce} 0 {len(tests)}")
        return
    for i, test in enumerate(tests):
        try:
            exec(compile(test, f"test_{i}", "exec"), namespace)
            passed += 1
        except BaseException as e:
            print(f"test {i} failed: {type(e).__name__}: {e}", file=sys.stderr)
    print(f"{nonce} {passed} {len(tests)}")


main()
