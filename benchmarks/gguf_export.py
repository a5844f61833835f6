"""GGUF export of SmolLM2-135M-Instruct at every quant type tunesmith writes: the file size and
the measured gap to the float32 model (transformers' GGUF loader, the verification prompts).
``q4_k_m`` needs llama-cpp-python (``make llama-cpp``): llama.cpp quantizes the f16 file.

The gaps do not depend on the machine's load (only timings would), so one run anywhere gives the
numbers quoted in docs/compress.md. Results go to ``benchmarks/results/gguf_export.json``; a run
with ``--quants`` replaces only those rows::

    python benchmarks/gguf_export.py
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _machine import machine_info  # noqa: E402

RESULTS = HERE / "results" / "gguf_export.json"
KEYS = ("bytes", "max_abs_logit_diff", "relative_logit_gap", "relative_tolerance",
        "greedy_agreement", "greedy_tokens", "prompts", "ok")  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--quants", default="f16,q8_0,q4_0,q4_1,q4_k_m")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()

    from tunesmith.compress.gguf_export import export_gguf
    from tunesmith.merge.common import MergeError
    from tunesmith.models.load import resolve_model

    model_dir = resolve_model(args.model)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gguf-") as tmp:
        for quant in args.quants.split(","):
            t0 = time.perf_counter()
            try:
                report = export_gguf(model_dir, quant, Path(tmp) / quant, device="cpu")
            except MergeError:  # verification failed: record the measured gap all the same
                report = json.loads((Path(tmp) / f"{quant}.verify.json").read_text())
                report["bytes"] = None
            row = {"quant": quant, **{k: report[k] for k in KEYS}}
            row["seconds"] = round(time.perf_counter() - t0, 1)
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.out.is_file():  # keep the other quant types' rows of an earlier run of this model
        earlier = json.loads(args.out.read_text())
        if earlier.get("model") == args.model:
            done = {r["quant"] for r in rows}
            rows = [r for r in earlier["rows"] if r["quant"] not in done] + rows
    float_bytes = sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))
    result = {
        "model": args.model,
        "float_safetensors_bytes": float_bytes,
        "loader": "transformers gguf_file= (dequantized to float32)",
        "rows": rows,
        "machine": machine_info(),
        "command": "python benchmarks/gguf_export.py " + " ".join(sys.argv[1:]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
