"""A tiny byte-level BPE tokenizer built in code, so tests never touch a model hub.

The tokenizer mimics SmolLM2's: a ChatML chat template that inserts a default system prompt,
``<|im_end|>`` as both EOS and pad, and no ``{% generation %}`` markers. Being byte-level, it can
encode any text; its small vocabulary is trained on ordinary English so common words stay short.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""SmolLM2-Instruct's chat template, character for character."""

SPECIAL_TOKENS: tuple[str, ...] = (
    "<|im_start|>",
    "<|im_end|>",
    "<s>",
    "</s>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
)

_CORPUS: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "You are a helpful AI assistant. Answer the question briefly and politely.",
    "What is the capital of France? The capital of France is Paris.",
    "Hello! How are you today? I am fine, thank you. How can I help you?",
    "Please write a short poem about the sea, the sun and the wind.",
    "Translate the following sentence into English: the weather is nice.",
    "Instruction: summarize the text below in one sentence. Response: it is done.",
    "Numbers like 1, 2, 3, 10, 42 and 2024 appear in many questions and answers.",
    "A system prompt tells the model who it is; the user asks and the assistant answers.",
    "Machine learning models are trained on data to make predictions about new inputs.",
    "She said that they would come back tomorrow morning with their friends.",
    "Is it true that water boils at 100 degrees Celsius at sea level? Yes, it is.",
    "Good morning, good evening, good night. See you soon, my friend!",
    "This is a test. That was an example. These are words; those were sentences.",
    "Why, when, where, who, which and how are common question words in English.",
)


def make_tiny_tokenizer(
    *, add_bos: bool = True, chat_tokens: bool = True, vocab_size: int = 600
) -> PreTrainedTokenizerFast:
    """Train and wrap a tiny byte-level BPE tokenizer with SmolLM2's ChatML chat template.

    Args:
        add_bos: when true (default), encoding with ``add_special_tokens=True`` prepends ``<s>``
            (like Llama tokenizers), so tests can check that BOS is never doubled.
        chat_tokens: when true (default), all of :data:`SPECIAL_TOKENS` are special tokens and
            ``eos_token = pad_token = '<|im_end|>'`` (as in SmolLM2). When false, only ``<s>`` and
            ``</s>`` exist (``eos_token = pad_token = '</s>'``), so chat markers such as
            ``<|im_start|>`` are tokenized as plain text.
        vocab_size: target vocabulary size of the BPE model (256 byte symbols are always kept).

    Returns:
        A fast tokenizer with ``bos_token='<s>'`` and ``unk_token=None``; the other special tokens
        are registered as additional special tokens. Its ``chat_template`` is SmolLM2's.
    """
    specials = list(SPECIAL_TOKENS) if chat_tokens else ["<s>", "</s>"]
    eos = "<|im_end|>" if chat_tokens else "</s>"
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(_CORPUS) * 4, trainer=trainer)
    byte_level = processors.ByteLevel(trim_offsets=False)
    if add_bos:
        bos_id = backend.token_to_id("<s>")
        template = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
        )
        backend.post_processor = processors.Sequence([byte_level, template])
    else:
        backend.post_processor = byte_level
    extra = [t for t in specials if t not in {"<s>", eos}]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token=eos,
        pad_token=eos,
        additional_special_tokens=extra,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = SMOLLM2_CHAT_TEMPLATE
    return tokenizer
