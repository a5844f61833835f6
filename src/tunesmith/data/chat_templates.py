"""Built-in chat templates, as Jinja strings in the Hugging Face chat-template dialect.

They are rendered by ``tokenizer.apply_chat_template`` exactly like a model's own template, so the
string used in training can be saved as the tokenizer's ``chat_template`` and served unchanged.

Conventions shared by all built-ins:

* Message contents are inserted verbatim (never stripped), so the trained text is exactly what
  the data says.
* Markers such as ``<|im_start|>`` or ``<|eot_id|>`` are written literally. When the tokenizer
  has no such special token they are simply tokenized as plain text; no token is ever added to
  the vocabulary (that would require resizing the embeddings). A model trained that way must be
  served with the marker as a *stop string* (see :func:`tunesmith.data.templates.end_of_turn_text`).
* ``bos_token`` / ``eos_token`` are the tokenizer's own (``bos_token`` may be absent; then nothing
  is written).

Every assistant turn ends with an end-of-turn marker, which is trained: ``<|im_end|>`` (ChatML),
``<|eot_id|>`` (Llama 3) or the tokenizer's EOS (Llama 2, Alpaca).
"""

from __future__ import annotations

CHATML = (
    "{%- for message in messages -%}"
    r"{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' -}}"
    "{%- endfor -%}"
    r"{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)
"""ChatML, without a default system prompt. End of turn: ``<|im_end|>``."""

LLAMA2 = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system_message = messages[0]['content'] -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set system_message = none -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{- raise_exception('llama2 template: after an optional system message, roles must "
    "alternate user/assistant/user/...') -}}"
    "{%- endif -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{- (bos_token or '') + '[INST] ' -}}"
    "{%- if loop.first and system_message is not none -%}"
    r"{{- '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' -}}"
    "{%- endif -%}"
    "{{- message['content'] + ' [/INST]' -}}"
    "{%- else -%}"
    "{{- ' ' + message['content'] + ' ' + eos_token -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
)
"""Llama 2 chat: ``<s>[INST] <<SYS>>\\nsys\\n<</SYS>>\\n\\nuser [/INST] answer </s>``.

There is no separate generation prompt: a prompt ends with `` [/INST]``. End of turn: EOS.
"""

LLAMA3 = (
    "{{- bos_token or '' -}}"
    "{%- for message in messages -%}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>' -}}"
    r"{{- '\n\n' + message['content'] + '<|eot_id|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    r"{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}"
    "{%- endif -%}"
)
"""Llama 3: ``<|begin_of_text|><|start_header_id|>role<|end_header_id|>\\n\\ncontent<|eot_id|>``.

As in Meta's template the leading marker is the tokenizer's ``bos_token`` (which is
``<|begin_of_text|>`` for Llama 3 tokenizers). End of turn: ``<|eot_id|>``.
"""

ALPACA = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    r"{{- message['content'] + '\n\n' -}}"
    "{%- elif message['role'] == 'user' -%}"
    r"{{- '### Instruction:\n' + message['content'] + '\n\n' -}}"
    "{%- else -%}"
    r"{{- '### Response:\n' + message['content'] + eos_token + '\n\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    r"{%- if add_generation_prompt -%}{{- '### Response:\n' -}}{%- endif -%}"
)
"""Alpaca: optional system text, ``### Instruction:\\n...\\n\\n### Response:\\n...`` + EOS."""

EOS_APPEND_PREAMBLE = (
    "{%- set ns_tunesmith = namespace(messages=[]) -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' and message['content'] is string -%}"
    "{%- set ns_tunesmith.messages = ns_tunesmith.messages"
    " + [{'role': 'assistant', 'content': message['content'] + eos_token}] -%}"
    "{%- else -%}"
    "{%- set ns_tunesmith.messages = ns_tunesmith.messages + [message] -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- set messages = ns_tunesmith.messages %}"
)
"""Prepended to a tokenizer template whose assistant turns do not end with EOS/end-of-turn text.

It rewrites ``messages`` so that every assistant content ends with ``eos_token``; the original
template then renders as usual. Because the rewrite lives in the template itself, the saved
template behaves at serving time exactly as in training.
"""

BUILTIN_TEMPLATES: dict[str, str] = {
    "chatml": CHATML,
    "llama2": LLAMA2,
    "llama3": LLAMA3,
    "alpaca": ALPACA,
}
"""Built-in templates by name."""

FIXED_END_OF_TURN: dict[str, str] = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>"}
"""Built-ins whose end-of-turn marker is literal text; the others end turns with EOS."""

KNOWN_END_OF_TURN: tuple[str, ...] = (
    "<|im_end|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|END_OF_TURN_TOKEN|>",
    "<|return|>",
    "</s>",
)
"""End-of-turn markers recognised after assistant content in a tokenizer's own template."""
