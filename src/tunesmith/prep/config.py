"""The ``tunesmith prep`` config: which files to read, what to remove, how to split, where to write.

Loaded with :func:`tunesmith.config.load_model` (``load_model(PrepConfig, path, overrides)``), so
unknown keys and bad values are reported with the file, the line and the nearest valid key.
Paths are relative to the working directory, as in training configs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tunesmith.config import Section

InputFormat = Literal["auto", "alpaca", "sharegpt", "messages", "prompt_completion", "text"]
PiiField = Literal["system", "user", "assistant", "text", "meta"]
PiiType = Literal["email", "phone", "credit_card", "ip_address", "secret"]

DEFAULT_REFUSALS: tuple[str, ...] = (
    "as an ai language model",
    "as a language model",
    "as an ai developed by",
    "as an ai assistant, i cannot",
    "as an ai, i cannot",
    "as an ai, i don't have",
    "i'm sorry, but as an ai",
    "i am sorry, but as an ai",
    "i'm sorry, but i cannot fulfill",
    "i cannot fulfill that request",
    "i cannot fulfill this request",
    "i'm not able to help with that request",
)
"""The "As an AI language model…" family, matched case-, space- and punctuation-insensitively."""


class InputSpec(Section):
    path: str = Field(..., description="A data file (jsonl, json, csv, parquet, optionally .gz).")
    format: InputFormat = Field("auto", description="Row format; auto = detect from the first row.")
    tag: str | None = Field(
        None,
        description="Task/source tag for every row of this file; a row's own meta 'tag' or "
        "'task' takes precedence.",
    )


class DedupSection(Section):
    exact: bool = Field(
        True,
        description="Remove exact duplicates (text compared case-, space- and "
        "punctuation-insensitively); the first occurrence is kept.",
    )
    near: bool = Field(
        True,
        description="Remove near-duplicates (MinHash LSH on word n-gram shingles); the "
        "first occurrence is kept.",
    )
    threshold: float = Field(0.8, gt=0.0, le=1.0, description="Jaccard similarity threshold.")
    ngram: int = Field(5, ge=1, description="Shingle size in words (shorter texts: all words).")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations.")


class ShortResponseFilter(Section):
    enabled: bool = True
    min_tokens: int = Field(
        2,
        ge=1,
        description="Responses with fewer tokens are removed (tokenizer tokens when a "
        "model is configured, else whitespace-separated words).",
    )


class TooLongFilter(Section):
    enabled: bool = Field(True, description="Remove examples longer than max_length tokens.")


class RepeatsPromptFilter(Section):
    enabled: bool = True
    min_similarity: float = Field(
        0.9,
        gt=0.0,
        le=1.0,
        description="Word-set Jaccard between a response and the user "
        "turn before it at or above which the response merely repeats the prompt.",
    )


class RepetitionFilter(Section):
    enabled: bool = True
    ngram: int = Field(3, ge=1, description="Word n-gram size for the repetition ratio.")
    max_ratio: float = Field(
        0.5,
        gt=0.0,
        lt=1.0,
        description="Remove responses whose share of repeated n-grams "
        "(1 - unique/total) exceeds this; responses with fewer than 8 n-grams are not judged.",
    )


class RefusalFilter(Section):
    enabled: bool = True
    phrases: list[str] = Field(
        list(DEFAULT_REFUSALS),
        description="Boilerplate refusal phrases; a response containing "
        "one (case-, space- and punctuation-insensitively) is removed.",
    )


class MarkupFilter(Section):
    enabled: bool = Field(True, description="Remove responses with unbalanced code fences.")


class FiltersSection(Section):
    short_response: ShortResponseFilter = ShortResponseFilter()
    too_long: TooLongFilter = TooLongFilter()
    repeats_prompt: RepeatsPromptFilter = RepeatsPromptFilter()
    repetition: RepetitionFilter = RepetitionFilter()
    refusal: RefusalFilter = RefusalFilter()
    broken_markup: MarkupFilter = MarkupFilter()


class PiiSection(Section):
    fields: list[PiiField] = Field(
        [],
        description="Opt-in: which fields to scrub (by role: system, user, assistant; text "
        "for plain-text rows; meta for every string in the row's extra keys).",
    )
    types: list[PiiType] = Field(
        ["email", "phone", "credit_card", "ip_address", "secret"],
        description="What to replace with typed placeholders such as <EMAIL>.",
    )
    phone_regions: list[str] | None = Field(
        None,
        description="ISO 3166 regions whose national-format numbers count as phones (e.g. [GB, "
        "DE]); default: every region libphonenumber knows, accepting only numbers valid there "
        "and written in that region's grouping. Numbers with + or 00 are always checked.",
    )

    @field_validator("phone_regions")
    @classmethod
    def _known_regions(cls, value: list[str] | None) -> list[str] | None:
        from tunesmith.prep import pii_phone

        if value is not None and pii_phone.available():
            return list(pii_phone.check_regions(value))
        return value


class RatiosSection(Section):
    train: float = Field(0.9, ge=0.0, le=1.0)
    validation: float = Field(0.05, ge=0.0, le=1.0)
    test: float = Field(0.05, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _sum_to_one(self) -> RatiosSection:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split ratios must sum to 1, got {total:g}")
        return self


class SplitsSection(Section):
    seed: int = 1234
    ratios: RatiosSection = RatiosSection()
    stratify: bool = Field(True, description="Split each task/source tag in the same ratios.")
    leakage_check: bool = Field(
        True,
        description="Move exact/near duplicates that would sit on both sides of a split "
        "into one split (the first of train, validation, test they touch).",
    )
    test_file: str | None = Field(
        None,
        description="An existing test set: input rows that duplicate or near-duplicate one "
        "of its rows are removed (rule test_overlap). Set ratios.test to 0 when it is your "
        "only test set.",
    )
    test_format: InputFormat = "auto"


class BalanceSection(Section):
    cap_per_tag: int | dict[str, int] | None = Field(
        None,
        description="Keep at most this many rows per tag (one number for every tag, or a "
        "mapping tag -> cap); which ones are kept is a seeded random choice.",
    )


class PrepModelSection(Section):
    name_or_path: str | None = Field(
        None,
        description="Tokenizer for token counts: a local model directory or an alias. "
        "Without it, token counts are whitespace-separated words.",
    )
    template: Literal["tokenizer", "chatml", "llama2", "llama3", "alpaca"] = Field(
        "tokenizer", description="Chat template used to count an example's full length."
    )


class PrepConfig(Section):
    """``tunesmith prep``: raw files in, clean splits + rejects + report out."""

    inputs: list[InputSpec] = Field(..., min_length=1)
    output_dir: str = "prepared"
    on_error: Literal["raise", "skip"] = Field(
        "raise",
        description="Malformed rows: stop with an error naming file, line and field, "
        "or reject them (rule 'malformed').",
    )
    max_length: int = Field(512, ge=1, description="Training length in tokens (see model).")
    model: PrepModelSection = PrepModelSection()
    dedup: DedupSection = DedupSection()
    filters: FiltersSection = FiltersSection()
    pii: PiiSection = PiiSection()
    splits: SplitsSection = SplitsSection()
    balance: BalanceSection = BalanceSection()
    progress: bool = Field(True, description="Show tqdm progress bars on stderr.")
    canaries: int = Field(
        0,
        ge=0,
        description="Plant this many random secrets in a fixed template in train.jsonl and record "
        "them in canaries.json, for `tunesmith probe memorization` (Carlini et al. 2019).",
    )

    @field_validator("inputs", mode="before")
    @classmethod
    def _paths_as_inputs(cls, value: Any) -> Any:
        """Accept ``inputs: file.jsonl`` or a list of plain paths as shorthand."""
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            return [{"path": v} if isinstance(v, str) else v for v in value]
        return value
