"""``POST /v1/embeddings`` (OpenAI-compatible) for sentence encoders such as ``method: embed``'s
``final/``: ``tunesmith serve --embedding-model NAME=DIR``.

The request: ``{"model", "input": str | [str, ...], "encoding_format": "float" | "base64"}``
(the ``openai`` client sends base64: little-endian float32 bytes). The vectors are exactly
:func:`tunesmith.models.sentence_encoder.embed_texts`' (the encoder's own pooling and
normalisation), so they equal sentence-transformers' for the same directory. Encoders run in a
worker thread, one request at a time, beside the generation worker."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request

from tunesmith.serve.errors import bad_request, model_not_found

MAX_INPUTS = 2048  # OpenAI's limit of inputs per request


class Embedders:
    """The served encoders by name, loaded at start; each with its token limit."""

    def __init__(self, dirs: dict[str, Path], device: str) -> None:
        from tunesmith.models.sentence_encoder import load_sentence_encoder

        self.models = {name: load_sentence_encoder(path, device) for name, path in dirs.items()}
        self.max_tokens = {name: _max_length(Path(path), m[1]) for (name, path), m in
                           zip(dirs.items(), self.models.values(), strict=True)}  # fmt: skip
        self.lock = threading.Lock()

    def embed(self, name: str, texts: list[str]) -> tuple[list[list[float]], int]:
        """Vectors of ``texts`` and the number of tokens they held."""
        from tunesmith.models.sentence_encoder import embed_texts

        step, tok = self.models[name]
        limit = self.max_tokens[name]
        counts = [len(ids) for ids in tok(texts)["input_ids"]]
        if (worst := max(counts)) > limit:
            i = counts.index(worst)
            raise bad_request(
                f"input[{i}] holds {worst} tokens; model '{name}' takes at most {limit}",
                param="input",
            )
        with self.lock:
            vectors = embed_texts(step, tok, texts, limit)
        return vectors.tolist(), sum(counts)


def _max_length(path: Path, tok: Any) -> int:
    cfg = path / "final" / "sentence_bert_config.json"
    cfg = cfg if cfg.is_file() else path / "sentence_bert_config.json"
    if cfg.is_file():
        return int(json.loads(cfg.read_text())["max_seq_length"])
    return int(min(getattr(tok, "model_max_length", 512), 512))


def parse_embedding_request(raw: bytes, known: list[str]) -> tuple[str, list[str], str]:
    """(model, texts, encoding_format) of a request body, or a 400 / 404 naming the field."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise bad_request("The request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or model not in known:
        raise model_not_found(str(model), known)
    texts = body.get("input")
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise bad_request("'input' must be a string or a non-empty list of strings", "input")
    if len(texts) > MAX_INPUTS or any(not t for t in texts):
        raise bad_request(f"'input' takes 1 to {MAX_INPUTS} non-empty strings", "input")
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise bad_request("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    return model, texts, fmt


def _encode(vector: list[float], fmt: str) -> list[float] | str:
    if fmt == "float":
        return vector
    import numpy as np

    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def add_embeddings_route(app: FastAPI, server: Any) -> None:
    """Register ``POST /v1/embeddings`` when the server has embedding models."""
    dirs = getattr(server.settings, "embedders", None) or {}
    if not dirs:
        return
    from tunesmith.serve.app import read_body

    embedders = Embedders(dict(dirs), server.settings.device)
    limit = server.settings.limits.max_body_bytes

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> dict[str, Any]:
        raw = await read_body(request, limit)
        model, texts, fmt = parse_embedding_request(raw, list(embedders.models))
        vectors, tokens = await asyncio.to_thread(embedders.embed, model, texts)
        data = [
            {"object": "embedding", "index": i, "embedding": _encode(v, fmt)}
            for i, v in enumerate(vectors)
        ]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return {"object": "list", "data": data, "model": model, "usage": usage}
