"""Server counters for ``GET /metrics``: Prometheus text by default, JSON with ``?format=json``."""

from __future__ import annotations

import threading
from collections import Counter, deque
from typing import Any

_WINDOW = 1000  # latencies kept for the quantiles


def label_value(value: object) -> str:
    """A label value escaped as the Prometheus text format requires: ``\\``, ``"``, newline."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()  # (endpoint, status) -> count
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.batches = 0
        self.batched_rows = 0
        self.latency_sum = 0.0
        self.latency_count = 0
        self._latencies: deque[float] = deque(maxlen=_WINDOW)
        self.queue_depth = 0
        self.in_flight = 0

    def request(self, endpoint: str, status: int) -> None:
        """One answered request; ``endpoint`` is a route template (or ``unmatched``), never the
        raw path, so the label set stays as small as the route table."""
        with self._lock:
            self.requests[(endpoint, status)] += 1

    def latency(self, seconds: float) -> None:
        """A finished generation, from arrival to its last token."""
        with self._lock:
            self.latency_sum += seconds
            self.latency_count += 1
            self._latencies.append(seconds)

    def tokens(self, prompt: int, completion: int) -> None:
        with self._lock:
            self.prompt_tokens += prompt
            self.completion_tokens += completion

    def batch(self, rows: int) -> None:
        with self._lock:
            self.batches += 1
            self.batched_rows += rows

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            lat = list(self._latencies)
            return {
                "requests": [
                    {"endpoint": e, "status": s, "count": n}
                    for (e, s), n in sorted(self.requests.items())
                ],
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "batches": self.batches,
                "mean_batch_size": self.batched_rows / self.batches if self.batches else 0.0,
                "latency_seconds": {
                    "sum": self.latency_sum,
                    "count": self.latency_count,
                    "p50": _quantile(lat, 0.5),
                    "p95": _quantile(lat, 0.95),
                },
                "queue_depth": self.queue_depth,
                "in_flight": self.in_flight,
            }

    def prometheus(self) -> str:
        snap = self.snapshot()
        lines = ["# TYPE tunesmith_requests_total counter"]
        for row in snap["requests"]:
            endpoint, status = label_value(row["endpoint"]), label_value(row["status"])
            labels = f'endpoint="{endpoint}",status="{status}"'
            lines.append(f"tunesmith_requests_total{{{labels}}} {row['count']}")
        lat = snap["latency_seconds"]
        lines += [
            "# TYPE tunesmith_tokens_total counter",
            f'tunesmith_tokens_total{{kind="prompt"}} {snap["prompt_tokens"]}',
            f'tunesmith_tokens_total{{kind="completion"}} {snap["completion_tokens"]}',
            "# TYPE tunesmith_batches_total counter",
            f"tunesmith_batches_total {snap['batches']}",
            "# TYPE tunesmith_batch_size_mean gauge",
            f"tunesmith_batch_size_mean {snap['mean_batch_size']:.4f}",
            "# TYPE tunesmith_request_latency_seconds summary",
            f'tunesmith_request_latency_seconds{{quantile="0.5"}} {lat["p50"]:.6f}',
            f'tunesmith_request_latency_seconds{{quantile="0.95"}} {lat["p95"]:.6f}',
            f"tunesmith_request_latency_seconds_sum {lat['sum']:.6f}",
            f"tunesmith_request_latency_seconds_count {lat['count']}",
            "# TYPE tunesmith_queue_depth gauge",
            f"tunesmith_queue_depth {snap['queue_depth']}",
            "# TYPE tunesmith_in_flight gauge",
            f"tunesmith_in_flight {snap['in_flight']}",
        ]
        return "\n".join(lines) + "\n"
