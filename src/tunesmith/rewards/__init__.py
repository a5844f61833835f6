"""Verifiable rewards for online RL: plain callables ``(prompts, completions, **fields) -> scores``.

``completions`` are the completion texts; every other field of the prompt's data record
(``answer``, ``tests``, ...) arrives as a keyword argument holding one value per completion.
"""
