"""Pre-flight checks: is the training pipeline feeding the model what we think it is?

``tunesmith doctor CONFIG`` (:func:`tunesmith.checks.report.run_doctor`) renders examples with
their loss masks and runs every check; ``tunesmith train`` runs the cheap ones
(:func:`preflight_failures`) and refuses to start on a FAIL unless given ``--skip-preflight``.

The checks, in report order:

1. ``end-of-turn``: every trained reply ends with EOS / the end-of-turn token;
2. ``bos``: no sequence starts with a doubled BOS;
3. ``padding``: padding carries the ignore label and no attention, trained EOS survive (pad == EOS);
4. ``padding-side``: training pads right, generation pads left;
5. ``template``: the chat template saved for serving renders exactly as training did;
6. ``truncation``: share of examples truncated, dropped or left with no trained token;
7. ``packing``: a packed example's logits equal its logits alone (runs the model);
8. ``lengths``: the length distribution against ``data.max_length``.

Every other method has its own cheap pre-flight, a pure function of the records it has read,
the tokenizer and the config, returning :class:`Check` s; ``failures(checks)`` lists the FAILs
for :class:`PreflightError`:

* ``dpo``, ``reward``: :func:`preflight_pairs` (:mod:`tunesmith.checks.pairs`);
* ``grpo``, ``ppo``: :func:`preflight_prompts` (:mod:`tunesmith.checks.prompts`);
* ``classify``: :func:`preflight_labels` (:mod:`tunesmith.checks.labels`).

This package imports nothing from ``methods/`` (which imports it).
"""

from tunesmith.checks.checks import Check, failures
from tunesmith.checks.labels import preflight_labels
from tunesmith.checks.pairs import preflight_pairs
from tunesmith.checks.preflight import PreflightError, cheap_checks, preflight_failures
from tunesmith.checks.prompts import model_context_length, preflight_prompts

__all__ = [
    "Check",
    "PreflightError",
    "cheap_checks",
    "failures",
    "model_context_length",
    "preflight_failures",
    "preflight_labels",
    "preflight_pairs",
    "preflight_prompts",
]
