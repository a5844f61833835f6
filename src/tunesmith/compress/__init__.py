"""Make a tuned model smaller or deployable: depth pruning, quantization-aware training (QAT),
GGUF export for llama.cpp / Ollama."""
