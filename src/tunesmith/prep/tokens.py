"""Token counts for the length filters and the report: a tokenizer's, or whitespace words.

Without a model in the config, "tokens" are whitespace-separated words, which undercounts real
subword tokens (typically by 1.3-2x for English); configure ``model.name_or_path`` to count with
the tokenizer the model will be trained with.
"""

from __future__ import annotations

from typing import Any, Protocol

from tunesmith.data.records import Example

_NO_LIMIT = 2**31 - 1


class TokenCounter(Protocol):
    """Counts tokens of a piece of text and of a whole example as it will be trained."""

    name: str

    def text(self, text: str) -> int: ...

    def example(self, ex: Example) -> int: ...


class WordCounter:
    """Whitespace-separated words; an example's length is the words of all its turns."""

    name = "whitespace_words"

    def text(self, text: str) -> int:
        return len(text.split())

    def example(self, ex: Example) -> int:
        if ex.text is not None:
            return len(ex.text.split())
        return sum(len(m.content.split()) for m in ex.messages)


class TokenizerCounter:
    """A tokenizer's tokens; an example is rendered with its chat template, as in training."""

    def __init__(
        self, tokenizer: Any, template: str = "tokenizer", name: str = "tokenizer"
    ) -> None:
        self._tokenizer = tokenizer
        self._template = template
        self.name = name

    def text(self, text: str) -> int:
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def example(self, ex: Example) -> int:
        """Full training length (template, special tokens, EOS) of ``ex``.

        Raises:
            DataError: the chat template cannot render the conversation.
        """
        from tunesmith.data.templates import encode_example

        encoded = encode_example(
            ex, self._tokenizer, template=self._template, max_length=_NO_LIMIT, train_on="all"
        )
        return len(encoded.input_ids)


def make_counter(name_or_path: str | None, template: str = "tokenizer") -> TokenCounter:
    """The tokenizer of ``name_or_path`` (model dir or alias), or words when it is ``None``."""
    if name_or_path is None:
        return WordCounter()
    from tunesmith.models.load import load_tokenizer, resolve_model

    tokenizer = load_tokenizer(resolve_model(name_or_path))
    return TokenizerCounter(tokenizer, template, name=f"tokenizer:{name_or_path}")
