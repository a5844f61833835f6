"""``tunesmith serve``: the command line of the OpenAI-compatible server."""

from __future__ import annotations

import argparse
import ipaddress
import os
from pathlib import Path
from typing import Any

from tunesmith.serve.errors import ServeError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server: one base, many LoRA adapters")
    p.add_argument("--base", required=True, help="base model: alias, model dir or .gguf")
    p.add_argument("--base-name", help="model id of the base in requests (default: --base)")
    p.add_argument(
        "--adapter", action="append", default=[], metavar="NAME=DIR", help="run or adapter dir"
    )
    p.add_argument(
        "--embedding-model",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="serve a sentence encoder (method embed's final/) at /v1/embeddings",
    )
    p.add_argument("--adapter-root", help="allow POST /v1/adapters for dirs under this root")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="bind address (default: loopback only); any other needs --api-key-env/--api-key-file",
    )
    p.add_argument("--port", type=int, default=8000)
    key = p.add_mutually_exclusive_group()
    key.add_argument("--api-key-env", metavar="VAR", help="require this env var's key as Bearer")
    key.add_argument("--api-key-file", metavar="FILE", help="require the key in FILE as Bearer")
    p.add_argument("--quantize", choices=["none", "int8"], default="none", help="int8: CPU")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument(
        "--max-batch-size", type=int, default=16, help="decoding slots: rows per forward"
    )
    p.add_argument("--max-prompt-tokens", type=int, default=2048)
    p.add_argument("--max-new-tokens", type=int, default=512, help="cap on a request's max_tokens")
    p.add_argument("--default-max-tokens", type=int, default=128)
    p.add_argument("--max-body-bytes", type=int, default=1_000_000)
    p.add_argument("--request-timeout", type=float, default=120.0, help="seconds per request")
    p.add_argument(
        "--max-queue",
        type=int,
        default=None,
        help="waiting requests before 429 (default: 4 x --max-batch-size); fewer are admitted "
        "when the measured batch time says they would not finish within --request-timeout",
    )
    p.add_argument(
        "--allow-control-tokens",
        action="store_true",
        help="honour special tokens typed in chat content (<|im_end|>...) as real turn markers; "
        "by default they are plain text, so a user cannot open a system turn",
    )
    p.set_defaults(func=cmd_serve)


def _adapters(specs: list[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ServeError(f"--adapter {spec!r}: write NAME=RUN_OR_ADAPTER_DIR")
        if name in out:
            raise ServeError(f"--adapter: the name {name!r} is given twice")
        out[name] = Path(path).expanduser()
    return out


def _api_key(args: argparse.Namespace) -> str | None:
    if args.api_key_env:
        key = os.environ.get(args.api_key_env, "")
        if not key:
            raise ServeError(f"--api-key-env {args.api_key_env}: that variable is unset or empty")
        return key
    if args.api_key_file:
        path = Path(args.api_key_file).expanduser()
        if not path.is_file():
            raise ServeError(f"--api-key-file {path}: no such file")
        key = path.read_text().strip()
        if not key:
            raise ServeError(f"--api-key-file {path}: the file is empty")
        return key
    return None


def settings_from_args(args: argparse.Namespace) -> Any:
    from tunesmith.serve.adapters import check_name
    from tunesmith.serve.errors import APIError
    from tunesmith.serve.settings import Batching, Limits, ServeSettings

    adapters = _adapters(args.adapter)
    for name in adapters:
        try:
            check_name(name, {args.base_name or args.base})
        except APIError as e:
            raise ServeError(f"--adapter {name}: {e.message}") from None
    root = Path(args.adapter_root).expanduser() if args.adapter_root else None
    if root is not None and not root.is_dir():
        raise ServeError(f"--adapter-root {root}: not a directory")
    limits = Limits(
        max_prompt_tokens=args.max_prompt_tokens,
        max_new_tokens=args.max_new_tokens,
        default_max_tokens=min(args.default_max_tokens, args.max_new_tokens),
        max_body_bytes=args.max_body_bytes,
        request_timeout_s=args.request_timeout,
        max_queue=args.max_queue,
    )
    return ServeSettings(
        base=args.base,
        adapters=adapters,
        adapter_root=root,
        base_name=args.base_name,
        api_key=_api_key(args),
        quantize=args.quantize,
        device=args.device,
        dtype=args.dtype,
        allow_control_tokens=args.allow_control_tokens,
        limits=limits,
        batching=Batching(max_batch_size=args.max_batch_size),
        embedders={n: Path(d) for n, _, d in (s.partition("=") for s in args.embedding_model)},
    )


def is_loopback(host: str) -> bool:
    """``host`` is ``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def cmd_serve(args: argparse.Namespace) -> int:
    from tunesmith.serve.errors import APIError
    from tunesmith.serve.server import build, serve_forever

    settings = settings_from_args(args)
    if settings.api_key is None and not is_loopback(args.host):
        raise ServeError(
            f"--host {args.host}: binding beyond loopback needs an API key "
            "(--api-key-env VAR or --api-key-file FILE)"
        )
    try:
        server = build(settings)
    except APIError as e:  # a bad --adapter (not LoRA, other base...)
        raise ServeError(f"--adapter: {e.message}") from None
    print(
        f"[tunesmith] serving {', '.join(server.host.models())} on http://{args.host}:{args.port}"
    )
    serve_forever(server, args.host, args.port)
    return 0
