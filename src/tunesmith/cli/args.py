"""Argument groups that several commands share."""

from __future__ import annotations

import argparse


def add_config_args(p: argparse.ArgumentParser) -> None:
    """A YAML config and ``key.sub=value`` overrides."""
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", help="key.sub=value")


def add_inference_args(p: argparse.ArgumentParser) -> None:
    """The model to run (a run, model or adapter dir, a .gguf file or an alias) and its device."""
    p.add_argument("model", help="run dir, model dir, adapter dir, .gguf file or alias")
    p.add_argument("--no-adapter", action="store_true", help="use the base model of a run")
    p.add_argument("--device", default="auto")
