"""Is fine-tuning the right tool? Rules of thumb over a few facts about the task.

Each rule that fires gives its reason and a vote; the option with the most votes is the
recommendation and every fired rule is printed. The rules (and their sources):

- no clean evaluation set -> build one first: without a held-out set nobody can tell whether
  any option helped (every fine-tuning guide starts here; OpenAI's and Anthropic's included);
- knowledge that changes often -> retrieval (RAG, Lewis et al. 2020): weights go stale, an
  index is updated in minutes, and answers can cite their source;
- only the output format matters -> structured output (constrained decoding against a JSON
  schema or grammar): it guarantees the format with no training at all;
- fewer than ~500 examples -> few-shot prompting: too few to fine-tune reliably, enough to pick
  good in-context examples (Brown et al. 2020; fine-tuning wins as data grows, Mosbach et al.
  2023);
- ~500 examples or more of a behaviour (style, task, format beyond a schema) -> fine-tune;
- latency or cost goals -> fine-tune a small model: it drops the long few-shot or retrieved
  context from every request and can run on smaller hardware;
- many exact duplicates in the data -> deduplicate before deciding (`tunesmith prep`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

FEW_SHOT_LIMIT = 500
OPTIONS = ("fine-tune", "rag", "few-shot", "structured-output")


@dataclass(frozen=True)
class Facts:
    examples: int | None = None
    knowledge_changes_often: bool = False
    format_only: bool = False
    has_eval_set: bool | None = None
    low_latency: bool = False
    low_cost: bool = False
    duplicate_fraction: float | None = None


@dataclass(frozen=True)
class Rule:
    name: str
    reason: str
    votes: dict[str, int]


@dataclass
class Advice:
    recommendation: str
    rules: list[Rule]
    prerequisites: list[str] = field(default_factory=list)


def _eval_rules(f: Facts) -> list[Rule]:
    if f.has_eval_set is False:
        return [
            Rule(
                "no-eval-set",
                "no clean held-out evaluation set: build one first (a few "
                "hundred real inputs with reference outputs), or nothing can show which "
                "option works",
                {},
            )
        ]
    return []


def _knowledge_rules(f: Facts) -> list[Rule]:
    rules = []
    if f.knowledge_changes_often:
        rules.append(
            Rule(
                "fresh-knowledge",
                "the knowledge changes often: it belongs in "
                "retrieval (RAG), where an update is a re-index, not a re-train, and "
                "answers can cite sources",
                {"rag": 3},
            )
        )
    if f.format_only:
        rules.append(
            Rule(
                "format-only",
                "only the output format is needed: constrained "
                "decoding (JSON schema / grammar) guarantees it with no training",
                {"structured-output": 3},
            )
        )
    return rules


def _data_rules(f: Facts) -> list[Rule]:
    if f.examples is None:
        return []
    if f.examples < FEW_SHOT_LIMIT:
        return [
            Rule(
                "few-examples",
                f"{f.examples} examples (< ~{FEW_SHOT_LIMIT}): few-shot "
                "prompting usually wins; too few to fine-tune reliably",
                {"few-shot": 2},
            )
        ]
    return [
        Rule(
            "enough-examples",
            f"{f.examples} examples (>= ~{FEW_SHOT_LIMIT}): enough to "
            "fine-tune a behaviour that prompting only approximates",
            {"fine-tune": 2},
        )
    ]


def _goal_rules(f: Facts) -> list[Rule]:
    if not (f.low_latency or f.low_cost):
        return []
    goals = " and ".join(g for g, on in (("latency", f.low_latency), ("cost", f.low_cost)) if on)
    return [
        Rule(
            "latency-cost",
            f"{goals} goals: a fine-tuned small model needs no few-shot "
            "or retrieved context in every request and runs on smaller hardware",
            {"fine-tune": 1},
        )
    ]


def _duplicate_rules(f: Facts) -> list[Rule]:
    if f.duplicate_fraction is not None and f.duplicate_fraction >= 0.05:
        return [
            Rule(
                "duplicates",
                f"{100 * f.duplicate_fraction:.0f}% of the examples are "
                "exact duplicates: deduplicate (`tunesmith prep`) before counting them",
                {},
            )
        ]
    return []


def advise(f: Facts) -> Advice:
    """Fire every rule, tally the votes; ties go to the cheaper option (the order of
    ``OPTIONS`` reversed: structured output, few-shot, RAG, then fine-tuning)."""
    rules = [
        *_eval_rules(f),
        *_knowledge_rules(f),
        *_data_rules(f),
        *_goal_rules(f),
        *_duplicate_rules(f),
    ]
    if not any(r.votes for r in rules):
        rules.append(
            Rule(
                "no-signal",
                "nothing points elsewhere: start with few-shot "
                "prompting, the cheapest option to evaluate",
                {"few-shot": 1},
            )
        )
    tally: Counter[str] = Counter()
    for rule in rules:
        tally.update(rule.votes)
    cheap_first = tuple(reversed(OPTIONS))
    best = max(cheap_first, key=lambda o: (tally[o], -cheap_first.index(o)))
    prereq = [r.reason for r in rules if not r.votes]
    return Advice(best, rules, prereq)
