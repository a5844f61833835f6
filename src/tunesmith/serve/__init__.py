"""``tunesmith serve``: an OpenAI-compatible HTTP server for one base model and many LoRA adapters.

The base is loaded once; adapters are loaded into one peft model and every batch mixes them
(peft's ``adapter_names=`` per-row routing), so requests for different adapters share a forward
pass. One worker thread owns the model; HTTP handlers only enqueue work and await its tokens.
"""
