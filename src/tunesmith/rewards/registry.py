"""Reward functions by name, weighted sums of several, and checks on what they return.

A reward is named by a built-in name (``math``, ``format``, ``code``) or ``module:function``
(any importable callable with the signature ``(prompts, completions, **fields) -> list[float]``).
Its ``args`` from the config are bound as keyword arguments. Every call is checked: a function
that raises, returns the wrong number of scores, or a score that is not a finite number stops
the run with a :class:`RewardError` naming the function and the example, never a silent zero.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from tunesmith.errors import UserError

RewardFn = Callable[..., Sequence[float]]

BUILTIN: dict[str, str] = {
    "math": "tunesmith.rewards.math:math_reward",
    "format": "tunesmith.rewards.format:format_reward",
    "code": "tunesmith.rewards.code:code_reward",
}


class RewardError(UserError):
    """A reward function failed or returned something unusable."""


@dataclass
class Reward:
    name: str
    fn: RewardFn
    weight: float = 1.0


def resolve_reward(name: str, args: Mapping[str, Any] | None = None) -> RewardFn:
    """The callable for a built-in name or ``module:function``, with ``args`` bound."""
    target = BUILTIN.get(name, name)
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise RewardError(
            f"reward '{name}': not a built-in ({', '.join(BUILTIN)}) nor 'module:function'"
        )
    try:
        fn = getattr(importlib.import_module(module), attr)
    except ImportError as e:
        raise RewardError(f"reward '{name}': cannot import module '{module}' ({e})") from None
    except AttributeError:
        raise RewardError(f"reward '{name}': module '{module}' has no '{attr}'") from None
    if not callable(fn):
        raise RewardError(f"reward '{name}': '{target}' is not callable")
    return partial(fn, **args) if args else fn


def _first_failing(
    r: Reward, prompts: Sequence[Any], completions: Sequence[str], fields: Mapping[str, list[Any]]
) -> tuple[int, BaseException] | None:
    """Call the function one example at a time to find the example that makes it raise."""
    for i in range(len(completions)):
        one = {k: v[i : i + 1] for k, v in fields.items()}
        try:
            r.fn(prompts[i : i + 1], completions[i : i + 1], **one)
        except Exception as e:  # the user's function: any exception is reported
            return i, e
    return None


def call_reward(
    r: Reward, prompts: Sequence[Any], completions: Sequence[str], fields: Mapping[str, list[Any]]
) -> list[float]:
    """Scores of one reward function, checked (see the module docstring)."""
    n = len(completions)
    try:
        scores = r.fn(prompts, completions, **fields)
    except Exception as e:  # the user's function: any exception is reported with its example
        found = _first_failing(r, prompts, completions, fields)
        index, err = found if found else (None, e)
        where = f" on example {index}" if index is not None else ""
        raise RewardError(
            f"reward '{r.name}' raised {type(err).__name__}{where}: {err}"
            + (f" (completion: {completions[index][:200]!r})" if index is not None else "")
        ) from e
    try:
        values = list(scores)
    except TypeError:
        raise RewardError(
            f"reward '{r.name}' returned {type(scores).__name__}, not a list"
        ) from None
    if len(values) != n:
        raise RewardError(f"reward '{r.name}' returned {len(values)} scores for {n} completions")
    out: list[float] = []
    for i, v in enumerate(values):
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise RewardError(f"reward '{r.name}' returned {v!r} for example {i}") from None
        if not math.isfinite(x):
            raise RewardError(f"reward '{r.name}' returned {x} for example {i}")
        out.append(x)
    return out


@dataclass
class Scores:
    total: list[float]
    by_reward: dict[str, list[float]] = field(default_factory=dict)


def score_all(
    rewards: Sequence[Reward],
    prompts: Sequence[Any],
    completions: Sequence[str],
    fields: Mapping[str, list[Any]],
) -> Scores:
    """Weighted sum  r_i = sum_k w_k * f_k(prompt_i, completion_i)  and each f_k's scores."""
    by = {r.name: call_reward(r, prompts, completions, fields) for r in rewards}
    total = [sum(r.weight * by[r.name][i] for r in rewards) for i in range(len(completions))]
    return Scores(total, by)
