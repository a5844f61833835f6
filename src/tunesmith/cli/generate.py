"""``tunesmith generate | chat``: replies from a trained (or any) model."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tunesmith.cli.args import add_inference_args


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("generate", help="reply to prompts (from --prompt or stdin lines)")
    add_inference_args(p)
    _add_sampling_args(p)
    p.add_argument("--prompt", action="append", help="a user message; repeatable")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("chat", help="interactive multi-turn chat on stdin")
    add_inference_args(p)
    _add_sampling_args(p)
    p.set_defaults(func=cmd_chat)


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=None)


def _sampling(args: argparse.Namespace) -> Any:
    from tunesmith.generation import SamplingParams

    return SamplingParams(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
    )


def _conversation(system: str | None, turns: list[tuple[str, str]]) -> list[Any]:
    from tunesmith.data.records import Message

    msgs = [Message("system", system)] if system else []
    for role, content in turns:
        msgs.append(Message(role, content))  # type: ignore[arg-type]
    return msgs


def cmd_generate(args: argparse.Namespace) -> int:
    """:func:`tunesmith.api.generate` on ``--prompt`` messages or stdin lines; JSON lines out."""
    from tunesmith.api import generate

    prompts = args.prompt or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    for g in generate(
        args.model, prompts, use_adapter=not args.no_adapter, device=args.device,
        system=args.system, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
        top_p=args.top_p, top_k=args.top_k, seed=args.seed,
    ):  # fmt: skip
        print(json.dumps({"prompt": g.prompt, "reply": g.reply}, ensure_ascii=False))
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from tunesmith.generation import chat_replies
    from tunesmith.models.load import load_for_inference

    model, tok = load_for_inference(args.model, use_adapter=not args.no_adapter, device=args.device)
    turns: list[tuple[str, str]] = []
    print("chat: type a message, an empty line or Ctrl-D to quit", file=sys.stderr)
    for line in sys.stdin:
        if not line.strip():
            break
        turns.append(("user", line.rstrip("\n")))
        reply = chat_replies(model, tok, [_conversation(args.system, turns)], _sampling(args))[0]
        turns.append(("assistant", reply))
        print(f"assistant: {reply}", flush=True)
    return 0
