"""Pre-flight for prompt records (``grpo``, ``ppo``): what generation starts from, how it stops,
and whether every reward can score a completion.

Entry point: :func:`preflight_prompts` ``(records, tokenizer, cfg, *, rewards, context_length)``
on the records read by :func:`tunesmith.data.prompts.read_prompts` (``prompt_ids`` filled in);
no model is run. The checks, in report order:

1. ``gen-prompt``: the template ends every prompt with a non-empty assistant header, so the model
   starts a reply instead of continuing the user's turn;
2. ``bos``: no prompt starts with a doubled BOS;
3. ``stop``: ``max_new_tokens`` > 0, and generation stops at the template's end of turn (a token
   :func:`tunesmith.generation.sample` stops on, or one of ``grpo.stop``);
4. ``context``: the longest prompt plus ``max_new_tokens`` fits the model's context;
5. ``rewards`` (GRPO): every configured reward function scores a few sample (prompt, fake
   completion) pairs: one that raises, returns NaN or the wrong number of scores FAILs, naming
   the function and the example;
6. ``reward-model`` (PPO): ``ppo.reward_model`` is a reward model, tokenizing as the policy does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import jinja2

from tunesmith.checks.checks import Check, check_bos
from tunesmith.checks.render import RenderedExample, rendered
from tunesmith.data.prompts import PromptRecord, reward_fields
from tunesmith.data.templates import (
    IGNORE_INDEX,
    ChatTemplateError,
    Encoded,
    end_of_turn_text,
    render_messages,
    template_string,
)
from tunesmith.generation import _eos_ids as generation_stop_ids  # what sample() stops on
from tunesmith.rewards.registry import Reward, RewardError, call_reward, resolve_reward

SAMPLE_PROMPTS = 64
"""Prompts whose rendering is checked (the first ones in order)."""

REWARD_PROMPTS = 4
"""Prompts the reward functions are tried on, each with every :func:`fake_completions` text."""

PROBE = "Hello, world! 123 <|im_end|> the quick brown fox"
"""Text both tokenizers must encode alike (policy and a causal-LM reward model)."""


def _encoded(rec: PromptRecord) -> Encoded:
    return Encoded(list(rec.prompt_ids), [IGNORE_INDEX] * len(rec.prompt_ids), 0, False)


def _name(rec: PromptRecord) -> str:
    return f"{rec.source}:{rec.line}"


def check_generation_prompt(
    records: Sequence[PromptRecord], tokenizer: Any, template: str
) -> Check:
    """1. Rendering with the generation prompt adds an assistant header after the prompt."""
    try:
        jinja = template_string(template, tokenizer)
        headers = set()
        for rec in records:
            bare = render_messages(rec.messages, tokenizer, jinja, generation_prompt=False)
            full = render_messages(rec.messages, tokenizer, jinja, generation_prompt=True)
            header = full[len(bare) :] if full.startswith(bare) else ""
            if not header.strip():
                return Check(
                    "gen-prompt",
                    "FAIL",
                    f"{_name(rec)}: template {template!r} adds no assistant header after the "
                    "prompt: the model would continue the user's turn instead of replying",
                )
            headers.add(header)
    except (ChatTemplateError, jinja2.TemplateError) as e:
        return Check("gen-prompt", "FAIL", f"template {template!r} cannot render prompts: {e}")
    shown = " / ".join(repr(h) for h in sorted(headers))
    return Check(
        "gen-prompt", "PASS", f"all {len(records)} prompts end with the assistant header {shown}"
    )


def check_stop(tokenizer: Any, template: str, stop: Sequence[str], max_new_tokens: int) -> Check:
    """3. A positive token budget, and a reply can end: the template's end-of-turn text is a
    single token generation stops on, or contains one of the stop strings."""
    if max_new_tokens < 1:
        return Check("stop", "FAIL", f"max_new_tokens is {max_new_tokens}: nothing is generated")
    try:
        marker = end_of_turn_text(template, tokenizer)
    except ChatTemplateError as e:
        return Check("stop", "FAIL", f"no end-of-turn for template {template!r}: {e}")
    stop_ids = generation_stop_ids(tokenizer)
    marker_ids = tokenizer.encode(marker, add_special_tokens=False)
    budget = f"max_new_tokens {max_new_tokens}"
    if len(marker_ids) == 1 and marker_ids[0] in stop_ids:
        return Check(
            "stop", "PASS", f"generation stops at {marker!r} (id {marker_ids[0]}); {budget}"
        )
    strings = [s for s in stop if s and s in marker]
    if strings:
        return Check("stop", "PASS", f"generation stops at stop string {strings[0]!r}; {budget}")
    return Check(
        "stop",
        "FAIL",
        f"replies end with {marker!r} (ids {marker_ids}), which generation does not stop on "
        f"(stop token ids {stop_ids}, stop strings {list(stop)}): every completion would run "
        f"to {budget}; add {marker!r} to the stop strings",
    )


def check_context(
    records: Sequence[PromptRecord],
    max_new_tokens: int,
    context_length: int | None,
    prompt_limit: int | None = None,
) -> Check:
    """4. The longest prompt (cut to ``prompt_limit`` when the method cuts) plus
    ``max_new_tokens`` fits ``context_length`` (the model's position limit)."""
    if context_length is None:
        return Check("context", "SKIP", "the model's context length is unknown")
    longest = max(records, key=lambda r: len(r.prompt_ids))
    n = len(longest.prompt_ids)
    if prompt_limit is not None:
        n = min(n, prompt_limit)
    total = n + max_new_tokens
    detail = (
        f"longest prompt {n} tokens ({_name(longest)}) + max_new_tokens {max_new_tokens} = {total}"
    )
    if total > context_length:
        return Check(
            "context", "FAIL", f"{detail} > the model's context {context_length} positions"
        )
    return Check("context", "PASS", f"{detail} <= the model's context {context_length}")


def fake_completions(rec: PromptRecord) -> list[str]:
    """Texts a policy may produce: empty, a well-formed answer, and an off-format reply."""
    answer = rec.fields.get("answer")
    answer = 42 if answer is None else answer
    return ["", f"<think>Let me work it out.</think> <answer>{answer}</answer>", "I don't know."]


def _failing_example(
    r: Reward, prompts: list[str], texts: list[str], fields: dict[str, list[Any]]
) -> int | None:
    for i in range(len(texts)):
        one = {k: v[i : i + 1] for k, v in fields.items()}
        try:
            call_reward(r, prompts[i : i + 1], texts[i : i + 1], one)
        except RewardError:
            return i
    return None


def _try_reward(
    r: Reward, sample: Sequence[PromptRecord], per: int, texts: list[str], fields: Any
) -> str:
    """One reward on the sample: a one-line summary, or raises RewardError naming the example."""
    prompts = [rec.text for rec in sample for _ in range(per)]
    t0 = time.perf_counter()
    try:
        scores = call_reward(r, prompts, texts, fields)
    except RewardError as e:
        i = _failing_example(r, prompts, texts, fields)
        where = (
            f" (first failing example: {_name(sample[i // per])}, completion {texts[i]!r})"
            if i is not None
            else ""
        )
        raise RewardError(f"{e}{where}") from None
    return f"{r.name} {min(scores):g}..{max(scores):g} ({time.perf_counter() - t0:.2f} s)"


def check_rewards(records: Sequence[PromptRecord], rewards: Sequence[Reward]) -> Check:
    """5. Every reward function scores fake completions of the first prompts without raising,
    with one finite number per completion (:func:`tunesmith.rewards.registry.call_reward`)."""
    sample = list(records[:REWARD_PROMPTS])
    per = len(fake_completions(sample[0]))
    texts = [t for rec in sample for t in fake_completions(rec)]
    fields = reward_fields(sample, per)
    done, failed = [], []
    for r in rewards:
        try:
            done.append(_try_reward(r, sample, per, texts, fields))
        except RewardError as e:
            failed.append(str(e))
    if failed:
        return Check(
            "rewards",
            "FAIL",
            f"{len(failed)} of {len(rewards)} reward function(s) fail on sample completions: "
            + "; ".join(failed),
        )
    return Check(
        "rewards",
        "PASS",
        f"{len(rewards)} reward function(s) scored {len(texts)} sample completions: "
        + ", ".join(done),
    )


def check_reward_model(path: str, tokenizer: Any) -> Check:
    """6. ``path`` holds a tunesmith reward model; a causal-LM one tokenizes as the policy does
    (it scores the policy's token ids). Reads the marker file and tokenizer only, no weights."""
    from tunesmith.models.reward_head import MARKER, RewardModelError, reward_model_dir

    try:
        weights = reward_model_dir(path)
    except RewardModelError as e:
        return Check("reward-model", "FAIL", str(e))
    info = json.loads((weights / MARKER).read_text(encoding="utf-8"))
    if info.get("kind") != "decoder":
        return Check(
            "reward-model",
            "PASS",
            f"{weights}: an {info.get('kind')} reward model, reading the decoded text with its "
            "own tokenizer",
        )
    from tunesmith.models.load import load_tokenizer

    theirs = load_tokenizer(weights)
    if (
        theirs.get_vocab() != tokenizer.get_vocab()
        or theirs(PROBE)["input_ids"] != tokenizer(PROBE)["input_ids"]
    ):
        return Check(
            "reward-model",
            "FAIL",
            f"{weights} tokenizes differently from the policy (vocab {len(theirs)} vs "
            f"{len(tokenizer)}): train the reward model on the policy's base model",
        )
    return Check("reward-model", "PASS", f"{weights}: same tokenizer as the policy")


def model_context_length(config: Any) -> int | None:
    """The position limit of a transformers model config (``model.config``), if it has one."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def generation_settings(cfg: Any) -> tuple[int, list[str], int | None]:
    """``(max_new_tokens, stop strings, prompt limit)`` of a grpo or ppo config: the method's
    own section (``cfg.grpo`` / ``cfg.ppo``), and ``data.max_prompt_length`` (GRPO refuses
    longer prompts) or ``data.max_length`` (PPO cuts prompts to it)."""
    section = getattr(cfg, cfg.method, None)
    max_new = int(getattr(section, "max_new_tokens", 0) or 0)
    stop = list(getattr(section, "stop", None) or [])
    limit = getattr(cfg.data, "max_prompt_length", None) or getattr(cfg.data, "max_length", None)
    return max_new, stop, limit


def _resolved(cfg: Any) -> list[Reward] | Check:
    try:
        return [Reward(r.key, resolve_reward(r.name, r.args), r.weight) for r in cfg.rewards]
    except RewardError as e:
        return Check("rewards", "FAIL", str(e))


def preflight_prompts(
    records: Sequence[PromptRecord],
    tokenizer: Any,
    cfg: Any,
    *,
    rewards: Sequence[Reward] | None = None,
    context_length: int | None = None,
) -> list[Check]:
    """Every prompt check (module docstring) on the train records; no model is run.

    Args:
        records: the train prompts as read (``read_prompts``: ``prompt_ids`` filled in).
        tokenizer: the policy's tokenizer.
        cfg: a ``grpo`` or ``ppo`` config (reads ``method``, ``data.template``, the method
            section's ``max_new_tokens`` / ``stop``, GRPO's ``rewards``, PPO's
            ``ppo.reward_model``).
        rewards: GRPO's resolved reward functions; default: resolved here from ``cfg.rewards``.
        context_length: the model's position limit (:func:`model_context_length` of
            ``model.config``); None skips the context check.
    """
    if not records:
        return [Check("prompts", "FAIL", "no prompt records to train on")]
    template = cfg.data.template
    max_new, stop, limit = generation_settings(cfg)
    sample = list(records[:SAMPLE_PROMPTS])
    names = [_name(r) for r in sample]
    checks = [
        check_generation_prompt(sample, tokenizer, template),
        check_bos([_encoded(r) for r in sample], tokenizer, None, names),
        check_stop(tokenizer, template, stop, max_new),
        check_context(records, max_new, context_length, limit),
    ]
    if hasattr(cfg, "rewards"):
        resolved = rewards if rewards is not None else _resolved(cfg)
        checks.append(resolved if isinstance(resolved, Check) else check_rewards(sample, resolved))
    if cfg.method == "ppo":
        checks.append(check_reward_model(cfg.ppo.reward_model, tokenizer))
    return checks


def render_prompts(
    records: Sequence[PromptRecord], tokenizer: Any, n: int
) -> list[RenderedExample]:
    """The first ``n`` prompts as the model sees them (nothing in a prompt is trained)."""
    return [rendered(_encoded(r), tokenizer, f"{_name(r)} prompt") for r in records[:n]]
