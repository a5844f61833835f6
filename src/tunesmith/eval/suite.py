"""Evaluation suites: a typed YAML file naming datasets, prompts, metrics and generation settings.

A suite holds one or more tasks. Each task reads one data file (paths are relative to the suite
file, then to the current directory, then to the repository) and is one of:

* ``generation``: the model replies to a prompt (greedy by default); each reply is scored against
  a reference by the task's ``metrics`` (exact_match, f1, rouge_l, json_valid, ...);
* ``choice``: multiple choice; every choice is scored by its log-likelihood given the prompt and
  the most likely one is the prediction (``accuracy``, ``classification``);
* ``loss``: held-out loss and perplexity of the rows' assistant turns;
* ``preference``: rows with ``prompt``, ``chosen`` and ``rejected``; ``preference_accuracy`` is the
  share of pairs where the chosen reply scores higher: by a reward model (``reward_model:``, a
  ``method: reward`` run) or else by the evaluated model's own log-likelihood.

The prompt is the row's own conversation (any format ``tunesmith`` reads, minus the final
assistant turn, which becomes the default reference), or ``prompt``: a template filled from the
row's fields (``"Question: {question}"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from tunesmith.config import Format, Section, load_model
from tunesmith.errors import UserError
from tunesmith.eval.scorers import GENERATION_METRICS

TaskType = Literal["generation", "choice", "loss", "preference"]
METRICS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "generation": (*GENERATION_METRICS, "classification"),
    "choice": ("accuracy", "classification"),
    "loss": ("loss", "perplexity"),
    "preference": ("preference_accuracy",),
}
DEFAULT_METRICS: dict[str, list[str]] = {
    "generation": ["exact_match", "f1"],
    "choice": ["accuracy"],
    "loss": ["loss", "perplexity"],
    "preference": ["preference_accuracy"],
}
REPO_ROOT = Path(__file__).resolve().parents[3]


class GenerationSettings(Section):
    max_new_tokens: int = Field(64, ge=1)
    temperature: float = Field(0.0, ge=0.0, description="0 = greedy (reproducible).")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)
    seed: int | None = None
    stop: list[str] = Field(
        default_factory=list, description="A reply ends before the first of these strings."
    )


class TaskSpec(Section):
    name: str = Field(..., min_length=1)
    type: TaskType = "generation"
    data: str = Field(..., description="Data file, relative to the suite file or the repo.")
    format: Format = Field("auto", description="Row format when no `prompt` template is given.")
    prompt: str | None = Field(
        None, description="Template of the user message, filled from the row: '{question}'."
    )
    system: str | None = Field(None, description="System prompt (default: the suite's).")
    reference: str | None = Field(
        None, description="Field holding the reference answer; default: the final assistant turn."
    )
    choices: str = Field("choices", description="choice tasks: the field listing the choices.")
    answer: str = Field(
        "answer", description="choice tasks: the field with the right choice (index or text)."
    )
    choice_score: Literal["sum", "mean"] = Field(
        "sum", description="Log-likelihood of a choice: summed, or averaged over its tokens."
    )
    metrics: list[str] | None = Field(None, description="Default depends on the task type.")
    generation: GenerationSettings | None = Field(None, description="Default: the suite's.")
    limit: int | None = Field(None, ge=1, description="Use only the first N rows.")
    max_length: int = Field(1024, ge=8, description="loss tasks: tokens per example.")
    reward_model: str | None = Field(
        None,
        description="preference tasks: a reward model run (relative paths as for `data`); "
        "default: the evaluated model's log-likelihood of each reply.",
    )

    @model_validator(mode="after")
    def _check_metrics(self) -> TaskSpec:
        allowed = METRICS_BY_TYPE[self.type]
        for name in self.metrics or []:
            if name not in allowed:
                raise ValueError(
                    f"metric '{name}' does not apply to {self.type} tasks "
                    f"(known: {', '.join(allowed)})"
                )
        return self

    @property
    def metric_names(self) -> list[str]:
        return list(self.metrics or DEFAULT_METRICS[self.type])


class SuiteConfig(Section):
    name: str = Field(..., min_length=1)
    description: str = ""
    template: Literal["tokenizer", "chatml", "llama2", "llama3", "alpaca"] = Field(
        "tokenizer", description="Chat template; a run's own template is used when evaluating it."
    )
    system: str | None = None
    batch_size: int = Field(8, ge=1)
    generation: GenerationSettings = GenerationSettings()
    tasks: list[TaskSpec] = Field(..., min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> SuiteConfig:
        names = [t.name for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"task names must be unique: {', '.join(dupes)}")
        return self


class SuiteError(UserError):
    """A suite names something that does not exist."""


@dataclass(frozen=True)
class Suite:
    """A loaded suite: the validated config, where it came from, and each task's data file."""

    config: SuiteConfig
    source: Path
    data_paths: dict[str, Path]
    reward_models: dict[str, Path] = field(default_factory=dict)


def resolve_data_path(raw: str, suite_file: Path, task: str) -> Path:
    """``raw`` as given, else relative to the suite file, the current directory, the repo."""
    path = Path(raw).expanduser()
    candidates = (
        [path]
        if path.is_absolute()
        else [suite_file.parent / path, Path.cwd() / path, REPO_ROOT / path]
    )
    for c in candidates:
        if c.exists():
            return c
    tried = ", ".join(str(c) for c in candidates)
    raise SuiteError(f"{suite_file}: task '{task}': '{raw}' not found (tried {tried})")


def load_suite(path: str | Path, overrides: list[str] | None = None) -> Suite:
    """Read and validate a suite file (errors name the file, line and field)."""
    source = Path(path)
    cfg = load_model(SuiteConfig, source, overrides)
    paths = {t.name: resolve_data_path(t.data, source, t.name) for t in cfg.tasks}
    rms = {
        t.name: resolve_data_path(t.reward_model, source, t.name)
        for t in cfg.tasks
        if t.reward_model is not None
    }
    return Suite(config=cfg, source=source, data_paths=paths, reward_models=rms)
