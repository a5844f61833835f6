"""The ``tunesmith`` command line as a package: one registration style, a fast start, and a
``validate`` that loads configuration code only."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

import tunesmith
from tests.helpers.runs import REPO
from tunesmith.cli import COMMAND_GROUPS, build_parser, main, recipes_dir

COMMANDS = {
    "train", "validate", "explain", "doctor", "ls", "prep", "models", "generate", "chat", "eval",
    "compare", "merge", "average", "export", "score", "serve", "report", "plan", "prune", "probe",
    "sweep", "lineage", "board", "guide",
}  # fmt: skip

HEAVY = ("torch", "transformers", "peft")


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (this one has torch loaded already)."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _loaded(out: str) -> list[str]:
    """The module list the child printed as its last stdout line."""
    return list(json.loads(out.strip().splitlines()[-1]))


def _handlers(sub: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Every (command path, handler), descending into groups such as ``probe memorization``."""
    found: list[tuple[str, Any]] = []
    for name, p in sub.choices.items():
        nested = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if p.get_default("func") is None and nested:
            found += _handlers(nested[0], f"{prefix}{name} ")
        else:
            found.append((prefix + name, p.get_default("func")))
    return found


def test_every_command_is_registered_by_a_module_of_the_cli_package() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == COMMANDS  # type: ignore[arg-type]
    for name, func in _handlers(sub):
        assert func.__module__.startswith("tunesmith.cli."), (name, func.__module__)
        assert func.__module__ in {g.__name__ for g in COMMAND_GROUPS}, name
    for group in COMMAND_GROUPS:
        assert callable(group.register), group.__name__


def test_building_the_parser_imports_no_heavy_library() -> None:
    code = (
        "import json, sys\n"
        "import tunesmith.cli\n"
        "tunesmith.cli.build_parser()\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert _loaded(done.stdout) == []


def test_version_names_tunesmith_and_the_installed_libraries() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tunesmith", "--version"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert line.startswith(f"tunesmith {tunesmith.__version__}")
    for package in HEAVY:
        assert f"{package} {metadata.version(package)}" in line


def test_python_dash_m_tunesmith_cli_runs_commands() -> None:
    """The benchmarks launch ``python -m tunesmith.cli train CONFIG``."""
    done = subprocess.run(
        [sys.executable, "-m", "tunesmith.cli", "ls"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "smollm2-135m-instruct/sft_lora.yaml" in done.stdout
    assert recipes_dir() == REPO / "configs"


def test_a_missing_config_is_a_user_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "tunesmith: error:" in capsys.readouterr().err


def _write_configs(tmp_path: Path) -> list[Path]:
    """A small config for each method; validate does not open the model or the data."""
    base = {"model": {"name_or_path": str(tmp_path)}, "data": {"train": "train.jsonl"}}
    extra = {
        "sft": {},
        "dpo": {},
        "reward": {},
        "classify": {},
        "ppo": {"ppo": {"reward_model": str(tmp_path)}},
        "grpo": {"rewards": [{"name": "math", "weight": 1.0}]},
    }
    paths = []
    for method, sections in extra.items():
        path = tmp_path / f"{method}.yaml"
        path.write_text(yaml.safe_dump({"method": method, **base, **sections}))
        paths.append(path)
    return paths


def test_validate_imports_no_training_loop(tmp_path: Path) -> None:
    paths = _write_configs(tmp_path)
    code = (
        "import json, sys\n"
        "from tunesmith.cli import main\n"
        "codes = [main(['validate', p]) for p in sys.argv[1:]]\n"
        "assert codes == [0] * len(codes), codes\n"
        "print(json.dumps(sorted(m for m in sys.modules\n"
        "    if m.startswith('tunesmith.methods') or m.split('.')[0] in ('torch',))))\n"
    )
    done = _python(code, *map(str, paths))
    assert done.returncode == 0, done.stdout + done.stderr
    for path in paths:
        assert f"{path}: valid ({path.stem})" in done.stdout
    assert _loaded(done.stdout) == []
