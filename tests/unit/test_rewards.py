"""Rewards: math answer extraction/normalisation, format credit, registry checks."""

from __future__ import annotations

from fractions import Fraction

import pytest

from tunesmith.rewards.format import format_reward, format_score
from tunesmith.rewards.math import answers_match, extract_answer, math_reward, parse_number
from tunesmith.rewards.registry import (
    Reward,
    RewardError,
    call_reward,
    resolve_reward,
    score_all,
)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("<think>2+2</think><answer>4</answer>", "4"),
        ("<answer>first</answer> then <answer> 7 </answer>", "7"),
        ("so the result is \\boxed{\\frac{3}{4}}.", "\\frac{3}{4}"),
        ("<answer>\\boxed{12}</answer>", "12"),
        ("I think 3 apples plus 4 gives 7 apples", "7"),
        ("no numbers here", None),
        ("a total of -1,234.50 dollars", "-1,234.50"),
    ],
)
def test_extract_answer(text: str, want: str | None) -> None:
    assert extract_answer(text) == want


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("1,234", Fraction(1234)),
        ("-3.0", Fraction(-3)),
        ("3/4", Fraction(3, 4)),
        ("\\frac{3}{4}", Fraction(3, 4)),
        ("$12.50", Fraction(25, 2)),
        ("x = 12.", Fraction(12)),
        ("1 and 2", None),  # two numbers: ambiguous
        ("5/0", None),
    ],
)
def test_parse_number(text: str, want: Fraction | None) -> None:
    assert parse_number(text) == want


def test_answers_match_numbers_and_strings() -> None:
    assert answers_match("0.75", "3/4")
    assert answers_match("1,000", 1000)
    assert answers_match("-7.0", "-7")
    assert not answers_match("7", "-7")
    assert answers_match("  Paris ", "paris")
    assert not answers_match(None, "1")


def test_math_reward_per_completion() -> None:
    completions = ["<answer>42</answer>", "the answer is 41", "\\boxed{42.0}", "nothing"]
    got = math_reward([""] * 4, completions, answer=[42, 42, "42", 42])
    assert got == [1.0, 0.0, 1.0, 0.0]


def test_format_full_and_partial_credit() -> None:
    full = "<think>3 * 4 = 12</think>\n<answer>12</answer>"
    assert format_score(full) == 1.0
    assert format_score("<think>x</think> blah <answer>12</answer>") == 0.5  # text between
    assert format_score("preamble <answer>12</answer>") == 0.25
    assert format_score("<think></think><answer>1</answer>") == 0.25  # empty think earns nothing
    assert format_score("plain 12") == 0.0
    assert format_score("<think></think> x </think>") == 0.0
    assert format_score("work... <answer>12</answer>", think=False) == 1.0
    assert format_score("<answer>12</answer> trailing", think=False, tag_credit=0.4) == 0.4
    assert format_reward([], [full, "plain"], tag_credit=0.1) == [1.0, 0.0]


def _raises_on_second(prompts: list[str], completions: list[str], **_: object) -> list[float]:
    if any(c == "boom" for c in completions):
        raise ValueError("cannot score")
    return [1.0] * len(completions)


def test_registry_resolves_builtins_and_module_function() -> None:
    assert resolve_reward("math")([""], ["<answer>2</answer>"], answer=[2]) == [1.0]
    fn = resolve_reward("tunesmith.rewards.format:format_reward", {"think": False})
    assert fn([""], ["<answer>2</answer>"]) == [1.0]
    with pytest.raises(RewardError, match="not a built-in"):
        resolve_reward("nope")
    with pytest.raises(RewardError, match="cannot import"):
        resolve_reward("no_such_module_xyz:fn")
    with pytest.raises(RewardError, match="has no 'missing'"):
        resolve_reward("tunesmith.rewards.math:missing")


def test_registry_names_the_function_and_example_on_failure() -> None:
    r = Reward("mine", _raises_on_second)
    with pytest.raises(RewardError, match=r"reward 'mine' raised ValueError on example 1"):
        call_reward(r, ["a", "b", "c"], ["ok", "boom", "ok"], {})
    nan = Reward("nanny", lambda p, c, **_: [0.0, float("nan")])
    with pytest.raises(RewardError, match=r"'nanny' returned nan for example 1"):
        call_reward(nan, ["a", "b"], ["x", "y"], {})
    short = Reward("short", lambda p, c, **_: [0.0])
    with pytest.raises(RewardError, match=r"'short' returned 1 scores for 2 completions"):
        call_reward(short, ["a", "b"], ["x", "y"], {})
    text = Reward("text", lambda p, c, **_: ["high", 1.0])
    with pytest.raises(RewardError, match=r"'text' returned 'high' for example 0"):
        call_reward(text, ["a", "b"], ["x", "y"], {})


def test_weighted_sum_of_rewards() -> None:
    rewards = [Reward("math", resolve_reward("math"), 1.0), Reward("fmt", format_reward, 0.5)]
    comps = ["<think>a</think><answer>3</answer>", "3"]
    s = score_all(rewards, ["", ""], comps, {"answer": [3, 4]})
    # first: math 1 + 0.5 * format 1 = 1.5; second: math 0 ("3" != 4) + 0.5 * 0 = 0
    assert s.total == [1.5, 0.0]
    assert s.by_reward == {"math": [1.0, 0.0], "fmt": [1.0, 0.0]}
