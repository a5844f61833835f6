"""Runs from Python: ``train`` a config into a run directory, open one, and evaluate, generate
from, merge or export it. The CLI commands call these functions (one implementation).

:class:`Run` here is the *finished* run directory a user holds; the lifecycle object every method
uses while training is :class:`tunesmith.engine.run.Run` (internal).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.api.config import ConfigLike, load_config
from tunesmith.errors import UserError


def jsonable(value: Any) -> Any:
    """Dataclasses, paths and tuples as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def result_summary(result: Any) -> dict[str, Any]:
    """A method's result as JSON, minus bulky stats, with the common keys named alike."""
    summary = jsonable(result)
    if not isinstance(summary, dict):
        return {"result": summary}
    summary.pop("stats", None)
    if "final_dir" in summary:
        summary["final"] = summary.pop("final_dir")
    if "last_train_loss" in summary:
        summary["train_loss"] = summary.pop("last_train_loss")
    return summary


@dataclass
class Generation:
    """One prompt and the model's reply."""

    prompt: str
    reply: str


@dataclass
class EvalResult:
    """An evaluation: ``suite`` None means held-out loss; ``metrics`` holds the headline numbers,
    ``details`` the full JSON (per-task rows for a suite), ``output`` where it was written."""

    model: str
    adapter: bool
    suite: str | None
    metrics: dict[str, Any]
    output: Path | None = None
    details: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class ModelReport:
    """A merged or exported model: where it is and its verification against the unmerged one."""

    output: Path
    kind: str
    report: dict[str, Any] = field(repr=False)


@dataclass
class Run:
    """A run directory (``train`` returns one; :meth:`open` reads one from disk)."""

    path: Path
    method: str
    steps: int | None = None
    train_loss: float | None = None
    val_loss: float | None = None
    final: Path | None = None
    summary: dict[str, Any] = field(default_factory=dict, repr=False)
    _loaded: dict[tuple[bool, str], Any] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def open(cls, path: str | Path) -> Run:
        """A finished (or interrupted) run directory: its method and its last logged numbers."""
        import yaml

        root = Path(path)
        if not (root / "config.yaml").is_file():
            raise UserError(f"{root}: not a run directory (no config.yaml)")
        method = str(yaml.safe_load((root / "config.yaml").read_text()).get("method", "sft"))
        steps = train_loss = val_loss = None
        log = root / "metrics.jsonl"
        for line in log.read_text().splitlines() if log.is_file() else []:
            row = json.loads(line)
            if row.get("split") == "train":
                steps, train_loss = row.get("step"), row.get("loss")
            elif row.get("split") in ("val", "final"):
                val_loss = row.get("val_loss", row.get("loss"))
        final = root / "final" if (root / "final").is_dir() else None
        return cls(root, method, steps, train_loss, val_loss, final)

    def _model(self, use_adapter: bool, device: str) -> tuple[Any, Any]:
        """The model and tokenizer, loaded once per (adapter, device) for repeated calls."""
        key = (use_adapter, device)
        if key not in self._loaded:
            from tunesmith.models.load import load_for_inference

            self._loaded[key] = load_for_inference(
                str(self.path), use_adapter=use_adapter, device=device
            )
        return self._loaded[key]

    def generate(
        self, prompts: str | Sequence[str], *, use_adapter: bool = True, device: str = "auto",
        **sampling: Any,
    ) -> list[Generation]:  # fmt: skip
        """Replies to ``prompts`` (see :func:`generate` for the sampling keywords)."""
        model, tok = self._model(use_adapter, device)
        return generate_with(model, tok, prompts, **sampling)

    def evaluate(self, suite: str | Path | None = None, **options: Any) -> EvalResult:
        """A suite on this run's model (or, without one, loss on the run's held-out split)."""
        return evaluate(str(self.path), suite, **options)

    def merge(self, out: str | Path | None = None, **verify: Any) -> ModelReport:
        """Fold the LoRA adapter into the base (``RUN/merged``), verified."""
        return merge([self.path], out=out, **verify)

    def export(self, format: str = "safetensors", out: str | Path | None = None,
               **verify: Any) -> ModelReport:  # fmt: skip
        """A standalone model (``RUN/export``), verified against the run's logits."""
        return export(self.path, format, out, **verify)


def train(
    config: ConfigLike,
    overrides: list[str] | None = None,
    *,
    resume: bool = False,
    skip_preflight: bool = False,
) -> Run:
    """Train ``config`` (a YAML path, a dict or a config object) with its method; the run."""
    extra = ["train.resume=true"] if resume else []
    cfg = load_config(config, [*(overrides or []), *extra])
    method = importlib.import_module(f"tunesmith.methods.{cfg.method}")
    result = method.run(cfg, skip_preflight=skip_preflight)
    from tunesmith.engine.distributed import leave

    leave()  # torchrun: leave the process group now that the method's DDP modules are freed
    summary = result_summary(result)
    final = summary.get("final")
    return Run(
        path=Path(summary.get("run_dir") or Path(cfg.train.output_dir) / str(cfg.train.run_name)),
        method=cfg.method,
        steps=summary.get("steps"),
        train_loss=summary.get("train_loss"),
        val_loss=summary.get("val_loss"),
        final=Path(final) if final else None,
        summary=summary,
    )


def open_run(path: str | Path) -> Run:
    """:meth:`Run.open`."""
    return Run.open(path)


def generate_with(
    model: Any,
    tokenizer: Any,
    prompts: str | Sequence[str],
    *,
    system: str | None = None,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int | None = None,
) -> list[Generation]:
    """Replies of a loaded model to single-turn ``prompts`` (temperature 0: greedy)."""
    from tunesmith.data.records import Message
    from tunesmith.generation import SamplingParams, chat_replies

    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    convs = [[*([Message("system", system)] if system else []), Message("user", p)] for p in texts]
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                            top_k=top_k, seed=seed)  # fmt: skip
    replies = chat_replies(model, tokenizer, convs, params)
    return [Generation(p, r) for p, r in zip(texts, replies, strict=True)]


def generate(
    model: str | Path, prompts: str | Sequence[str], *, use_adapter: bool = True,
    device: str = "auto", **sampling: Any,
) -> list[Generation]:  # fmt: skip
    """Replies from ``model`` (a run, model or adapter dir, a .gguf file, an alias or a Hugging
    Face id); ``sampling``: system, max_new_tokens, temperature, top_p, top_k, seed."""
    from tunesmith.models.load import load_for_inference

    loaded, tok = load_for_inference(str(model), use_adapter=use_adapter, device=device)
    return generate_with(loaded, tok, prompts, **sampling)


def evaluate(
    model: str | Path,
    suite: str | Path | None = None,
    *,
    data: str | None = None,
    overrides: list[str] | None = None,
    use_adapter: bool = True,
    device: str = "auto",
    batch_size: int | None = None,
    output: str | Path | None = None,
    **data_settings: Any,
) -> EvalResult:
    """An evaluation suite on ``model`` (written to ``RUN/eval-<suite>.json`` for a run dir),
    or, without a suite, token-weighted loss and perplexity on ``data`` (default: the run's
    held-out split); ``data_settings``: template, format, max_length (loss mode only)."""
    from tunesmith.api.evaluation import evaluate_loss, evaluate_suite

    if suite is None:
        return evaluate_loss(str(model), data, use_adapter, device, batch_size, output,
                             data_settings)  # fmt: skip
    given = [f"--{k.replace('_', '-')}" for k, v in {"data": data, **data_settings}.items()
             if v is not None]  # fmt: skip
    if given:
        raise UserError(
            f"eval --suite: {', '.join(given)} do not apply (set them in the suite file, "
            "or override with --set key=value)"
        )
    extra = [f"batch_size={batch_size}"] if batch_size is not None else []
    return evaluate_suite(str(model), str(suite), [*(overrides or []), *extra], use_adapter,
                          device, output)  # fmt: skip


def merge(
    runs: str | Path | Sequence[str | Path],
    *,
    method: str | None = None,
    weights: list[float] | None = None,
    density: float | None = None,
    out: str | Path | None = None,
    tolerance: float = 1e-3,
    prompts: int = 4,
    device: str = "auto",
) -> ModelReport:
    """Fold one run's adapter into its base, or merge several runs' adapters (``method``:
    linear, ties, dare_ties, dare_linear, cat, svd); verified against the unmerged logits."""
    from tunesmith.merge import merge_adapters, merge_run

    paths = [runs] if isinstance(runs, str | Path) else list(runs)
    opts = {"tolerance": tolerance, "n_prompts": prompts, "device": device}
    if len(paths) == 1 and method is None:
        report = merge_run(paths[0], out, **opts)  # type: ignore[arg-type]
    else:
        report = merge_adapters(paths, method or "linear", weights, density, out, **opts)  # type: ignore[arg-type]
    return ModelReport(Path(report["output"]), str(report.get("kind", "merge")), report)


def export(
    run: str | Path,
    format: str = "safetensors",
    out: str | Path | None = None,
    *,
    quant: str = "q8_0",
    tolerance: float = 1e-3,
    prompts: int = 4,
    device: str = "auto",
) -> ModelReport:
    """A standalone model from a run: a safetensors directory (``RUN/export``), or a GGUF file
    at ``quant`` with an Ollama Modelfile (``RUN/gguf``); verified against the run's logits."""
    from tunesmith.merge import export_run

    report = export_run(run, format, out, tolerance=tolerance, n_prompts=prompts, device=device,
                        quant=quant)  # fmt: skip
    return ModelReport(Path(report["output"]), str(report.get("kind", f"export-{format}")), report)
