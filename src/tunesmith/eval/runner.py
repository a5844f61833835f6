"""Run an evaluation suite on one model: batched generation, choice log-likelihoods, losses.

Multiple choice (as in lm-evaluation-harness): the score of choice c given prompt x is

    score(c) = sum_t log p(c_t | x, c_<t)        (choice_score: sum)
    score(c) = score_sum(c) / |c|                 (choice_score: mean, per token)

and the prediction is argmax_c score(c). Loss tasks give the token-weighted mean loss over the
assistant turns, ``loss = sum NLL / sum tokens`` and ``perplexity = exp(loss)``, plus each row's
own mean loss.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tunesmith.data.dataset import collate
from tunesmith.data.templates import Encoded, encode_example, encode_prompt
from tunesmith.engine.forward import forward_logits
from tunesmith.eval.items import EvalItem, load_items
from tunesmith.eval.scorers import GENERATION_METRICS, classification_scores, mean, normalize_answer
from tunesmith.eval.suite import GenerationSettings, Suite, TaskSpec
from tunesmith.generation import SamplingParams, generate_ids
from tunesmith.losses.sft import IGNORE_INDEX


@torch.no_grad()
def sequence_nll(
    model: Any, encoded: list[Encoded], pad_id: int, batch_size: int = 8
) -> list[tuple[float, int]]:
    """(summed negative log-likelihood of the labelled tokens, their count) for each example."""
    device = next(model.parameters()).device
    out: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = {k: v.to(device) for k, v in collate([encoded[i] for i in idx], pad_id).items()}
        logits = forward_logits(model, batch)[:, :-1].float()  # [B, T-1, V]
        targets = batch["labels"][:, 1:]  # [B, T-1]
        nll = F.cross_entropy(
            logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
        )  # [B, T-1]
        counts = (targets != IGNORE_INDEX).sum(dim=1)
        for row, i in enumerate(idx):
            out[i] = (float(nll[row].sum()), int(counts[row]))
    return out


def _sampling(g: GenerationSettings) -> SamplingParams:
    return SamplingParams(g.max_new_tokens, g.temperature, g.top_p, g.top_k, g.seed, tuple(g.stop))


def _batches(items: list[Any], size: int, desc: str, show: bool) -> Any:
    bar = tqdm(total=len(items), desc=desc, unit="ex", dynamic_ncols=True, disable=not show)
    for start in range(0, len(items), size):
        chunk = items[start : start + size]
        yield chunk
        bar.update(len(chunk))
    bar.close()


class Context:
    """What every task runner needs: the model, tokenizer, template and batching."""

    def __init__(self, model: Any, tokenizer: Any, suite: Suite, progress: bool = True) -> None:
        self.model, self.tokenizer, self.suite, self.progress = model, tokenizer, suite, progress
        self.template = suite.config.template
        self.batch_size = suite.config.batch_size

    def prompt_ids(self, item: EvalItem) -> list[int]:
        return encode_prompt(list(item.prompt), self.tokenizer, self.template)


def _classification(preds: list[str], refs: list[str], labels: list[str] | None) -> dict[str, Any]:
    return classification_scores(preds, refs, labels)


def run_generation(ctx: Context, task: TaskSpec, items: list[EvalItem]) -> dict[str, Any]:
    params = _sampling(task.generation or ctx.suite.config.generation)
    replies: list[str] = []
    for chunk in _batches(items, ctx.batch_size, task.name, ctx.progress):
        prompts = [ctx.prompt_ids(it) for it in chunk]
        replies += generate_ids(ctx.model, ctx.tokenizer, prompts, params, len(prompts))
    names = [m for m in task.metric_names if m in GENERATION_METRICS]
    examples = []
    for it, reply in zip(items, replies, strict=True):
        ref = it.reference or ""
        scores = {m: GENERATION_METRICS[m](reply, ref) for m in names}
        examples.append(_row(it, prediction=reply, scores=scores))
    metrics: dict[str, Any] = {m: mean([e["scores"][m] for e in examples]) for m in names}
    if "classification" in task.metric_names:
        refs = [normalize_answer(it.reference or "") for it in items]
        metrics["classification"] = _classification(
            [normalize_answer(r) for r in replies], refs, sorted(set(refs))
        )
    return {"primary": names[0] if names else "classification", "higher_is_better": True,
            "metrics": metrics, "examples": examples}  # fmt: skip


def _choice_encoded(ctx: Context, item: EvalItem) -> list[Encoded]:
    prompt = ctx.prompt_ids(item)
    out = []
    for choice in item.choices:
        ids = list(ctx.tokenizer(choice, add_special_tokens=False)["input_ids"]) or [
            int(ctx.tokenizer.eos_token_id)
        ]
        out.append(Encoded(prompt + ids, [IGNORE_INDEX] * len(prompt) + ids, len(ids), False))
    return out


def run_choice(ctx: Context, task: TaskSpec, items: list[EvalItem]) -> dict[str, Any]:
    examples = []
    for chunk in _batches(items, ctx.batch_size, task.name, ctx.progress):
        flat = [enc for it in chunk for enc in _choice_encoded(ctx, it)]
        nll = sequence_nll(ctx.model, flat, ctx.tokenizer.pad_token_id, ctx.batch_size * 2)
        pos = 0
        for it in chunk:
            k = len(it.choices)
            part, pos = nll[pos : pos + k], pos + k
            lp = [-s if task.choice_score == "sum" else -s / max(n, 1) for s, n in part]
            pred = max(range(k), key=lambda j: lp[j])
            others = [v for j, v in enumerate(lp) if j != it.answer]
            examples.append(
                _row(
                    it,
                    prediction=it.choices[pred],
                    scores={"accuracy": float(pred == it.answer)},
                    choices=list(it.choices),
                    answer_index=it.answer,
                    predicted_index=pred,
                    logprobs=lp,
                    margin=lp[it.answer or 0] - max(others),
                )
            )
    metrics: dict[str, Any] = {"accuracy": mean([e["scores"]["accuracy"] for e in examples])}
    if "classification" in task.metric_names:
        preds = [e["prediction"] for e in examples]  # labels: every reference and prediction
        metrics["classification"] = _classification(
            preds, [it.reference or "" for it in items], None
        )
    return {"primary": "accuracy", "higher_is_better": True, "metrics": metrics,
            "examples": examples}  # fmt: skip


def run_loss(ctx: Context, task: TaskSpec, items: list[EvalItem]) -> dict[str, Any]:
    encoded = []
    for it in items:
        assert it.example is not None
        encoded.append(
            encode_example(it.example, ctx.tokenizer, template=ctx.template,
                           max_length=task.max_length)
        )  # fmt: skip
    results: list[tuple[float, int]] = []
    for chunk in _batches(encoded, ctx.batch_size, task.name, ctx.progress):
        results += sequence_nll(ctx.model, chunk, ctx.tokenizer.pad_token_id, ctx.batch_size)
    total, tokens = sum(s for s, _ in results), sum(n for _, n in results)
    loss = total / max(tokens, 1)
    examples = [
        _row(it, scores={"loss": s / max(n, 1)}, tokens=n)
        for it, (s, n) in zip(items, results, strict=True)
    ]
    metrics = {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": tokens}
    return {"primary": "loss", "higher_is_better": False, "metrics": metrics,
            "examples": examples}  # fmt: skip


def _preference_scores(ctx: Context, task: TaskSpec, items: list[EvalItem]) -> list[float]:
    """[chosen_0, rejected_0, chosen_1, ...]: rewards, or the model's summed log-likelihoods."""
    path = ctx.suite.reward_models.get(task.name)
    if path is not None:
        from tunesmith.models.reward_head import load_reward_model

        device = str(next(ctx.model.parameters()).device)
        rm = load_reward_model(path, device=device)
        prompts = [list(it.prompt) for it in items for _ in (0, 1)]
        replies = [c for it in items for c in it.choices]
        return rm.score(prompts, replies, ctx.batch_size)
    flat = [enc for it in items for enc in _choice_encoded(ctx, it)]
    return [
        -s for s, _ in sequence_nll(ctx.model, flat, ctx.tokenizer.pad_token_id, ctx.batch_size)
    ]


def run_preference(ctx: Context, task: TaskSpec, items: list[EvalItem]) -> dict[str, Any]:
    """preference_accuracy = share of pairs with score(chosen) > score(rejected) (ties: wrong)."""
    scores: list[float] = []
    for chunk in _batches(items, ctx.batch_size, task.name, ctx.progress):
        scores += _preference_scores(ctx, task, chunk)
    examples = []
    for i, it in enumerate(items):
        chosen, rejected = scores[2 * i], scores[2 * i + 1]
        examples.append(_row(it, prediction=it.choices[0 if chosen > rejected else 1],
                             scores={"preference_accuracy": float(chosen > rejected)},
                             chosen_score=chosen, rejected_score=rejected,
                             margin=chosen - rejected))  # fmt: skip
    metrics = {
        "preference_accuracy": mean([e["scores"]["preference_accuracy"] for e in examples]),
        "mean_margin": mean([e["margin"] for e in examples]),
        "scorer": "reward_model" if task.name in ctx.suite.reward_models else "log_likelihood",
    }
    return {"primary": "preference_accuracy", "higher_is_better": True, "metrics": metrics,
            "examples": examples}  # fmt: skip


def _row(it: EvalItem, **fields: Any) -> dict[str, Any]:
    return {"id": it.id, "line": it.line, "prompt": it.prompt_text(),
            "reference": it.reference, **fields}  # fmt: skip


RUNNERS: dict[str, Callable[[Context, TaskSpec, list[EvalItem]], dict[str, Any]]] = {
    "generation": run_generation,
    "choice": run_choice,
    "loss": run_loss,
    "preference": run_preference,
}


def run_suite(model: Any, tokenizer: Any, suite: Suite, progress: bool = True) -> dict[str, Any]:
    """Every task of ``suite`` on ``model``: aggregates and per-example rows, JSON-ready."""
    ctx = Context(model, tokenizer, suite, progress)
    cfg = suite.config
    tasks: dict[str, Any] = {}
    summary: dict[str, float] = {}
    started = time.perf_counter()
    for task in cfg.tasks:
        items = load_items(task, suite.data_paths[task.name], cfg.system)
        result = RUNNERS[task.type](ctx, task, items)
        tasks[task.name] = {"type": task.type, "data": str(suite.data_paths[task.name]),
                            "n": len(items), **result}  # fmt: skip
        for name, value in result["metrics"].items():
            if isinstance(value, int | float):
                summary[f"{task.name}/{name}"] = value
            elif isinstance(value, dict) and "accuracy" in value:
                summary[f"{task.name}/{name}_macro_f1"] = value["macro_f1"]
    return {
        "suite": cfg.name,
        "suite_file": str(suite.source),
        "seconds": round(time.perf_counter() - started, 3),
        "summary": summary,
        "tasks": tasks,
    }


def evaluate_suite(
    target: str,
    suite_path: str,
    *,
    use_adapter: bool = True,
    device: str = "auto",
    overrides: list[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The full results of ``suite_path`` on ``target`` (aggregates and per-example rows)."""
    from tunesmith.eval.loading import load_eval_model
    from tunesmith.eval.suite import load_suite

    suite = load_suite(suite_path, overrides)  # a bad suite fails before the model loads
    model, tokenizer = load_eval_model(target, use_adapter, device)
    result = run_suite(model, tokenizer, suite, progress)
    return {"model": target, "adapter": use_adapter, **result}
