"""The two kinds of ``evaluate``: held-out loss and perplexity, or an evaluation suite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunesmith.api.runs import EvalResult
from tunesmith.errors import UserError


def _eval_data(model: str, data: str | None, given: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The data to evaluate on and the data settings (from the run's config when there is one)."""
    run_cfg = Path(model) / "config.yaml"
    settings: dict[str, Any] = {}
    if run_cfg.is_file():
        import yaml

        settings = yaml.safe_load(run_cfg.read_text())["data"]
    data = data or (str(Path(model) / "data" / "val.jsonl") if run_cfg.is_file() else None)
    if data is None:
        raise UserError("eval: give --data FILE (a model dir has no held-out split of its own)")
    settings.update({k: v for k, v in given.items() if v is not None})
    return data, settings


def evaluate_loss(
    model: str,
    data: str | None,
    use_adapter: bool,
    device: str,
    batch_size: int | None,
    output: str | Path | None,
    data_settings: dict[str, Any],
) -> EvalResult:
    """Token-weighted loss and perplexity of ``model`` on ``data``."""
    from tunesmith.config import DataSection
    from tunesmith.data.dataset import prepare_data
    from tunesmith.eval.loading import load_eval_model
    from tunesmith.eval.perplexity import evaluate_loss as _loss
    from tunesmith.models.load import pick_device

    unknown = set(data_settings) - {"template", "format", "max_length"}
    if unknown:
        raise UserError(f"evaluate: unknown option(s) {', '.join(sorted(unknown))}")
    path, settings = _eval_data(model, data, data_settings)
    keep = {k: v for k, v in settings.items() if k in DataSection.model_fields}
    cfg = DataSection(**{**keep, "train": path, "validation": None, "val_fraction": 0.0})
    loaded, tok = load_eval_model(model, use_adapter=use_adapter, device=device)
    prepared = prepare_data(cfg, tok)
    result = _loss(loaded, prepared.train.encoded, tok.pad_token_id, pick_device(device),
                   batch_size=batch_size or 8)  # fmt: skip
    metrics = {"examples": len(prepared.train.encoded), "rejected": len(prepared.rejects),
               **result}  # fmt: skip
    details = {"model": model, "adapter": use_adapter, "data": path, **metrics}
    out = Path(output) if output else None
    if out is not None:
        out.write_text(json.dumps(details, indent=2))
    return EvalResult(model, use_adapter, None, metrics, out, details)


def default_output(target: str, suite_name: str) -> Path | None:
    """``RUN/eval-<suite>.json`` when ``target`` is a run dir (``tunesmith report`` shows it)."""
    run = Path(target)
    if (run / "final").is_dir() and (run / "config.yaml").is_file():
        return run / f"eval-{suite_name}.json"
    return None


def evaluate_suite(
    model: str,
    suite: str,
    overrides: list[str],
    use_adapter: bool,
    device: str,
    output: str | Path | None,
) -> EvalResult:
    """A suite's results on ``model``, written to ``output`` (default: ``RUN/eval-NAME.json``)."""
    from tunesmith.eval.runner import evaluate_suite as _suite

    result = _suite(model, suite, use_adapter=use_adapter, device=device, overrides=overrides)
    out = Path(output) if output else default_output(model, result["suite"])
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    return EvalResult(model, use_adapter, result["suite"], dict(result["summary"]), out, result)
