"""What the bot counts, in the Prometheus text format, and whether it is healthy: ``/metrics`` and ``/healthz``.

Served on ``METRICS_PORT`` (off unless set) by a small HTTP server on a thread of its own, so a
scrape never waits for the event loop. Counted: photos received and how each ended (an album, or
a refusal and its reason), the photo-to-album time, photos per forward pass, the index's size and
search backend, and how album photos were sent (a cached Telegram file_id or an upload). Nothing
here names a user or holds the bot's token.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, Metric

log = logging.getLogger(__name__)

#: ``lookalike_refusals_total{reason=...}``: every answer that was not an album, and why
REFUSAL_REASONS = (
    "rate_limited", "too_many_waiting", "too_big", "not_an_image", "download_failed", "busy", "search_down", "no_photos",
    "no_match", "failed",
)  # fmt: skip


class BotMetrics:
    """The bot's counters, on a registry of its own (a second bot in one process would not collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.photos = self._counter("lookalike_photos", "Photos and image files received, by how they ended", "outcome", ("album", "refused"))
        self.refusals = self._counter("lookalike_refusals", "Answers that were not an album, by reason", "reason", REFUSAL_REASONS)
        self.photo_seconds = Histogram(
            "lookalike_photo_to_album_seconds", "From the photo's update reaching the bot to its album sent",
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0), registry=self.registry,
        )  # fmt: skip
        self.batch_photos = Histogram(
            "lookalike_forward_pass_photos", "Photos per forward pass of the model", buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry
        )
        self.filtered = self._counter(
            "lookalike_filtered_searches", "Searches narrowed by the shopper: by the photo's caption words or a filter button",
            "source", ("caption", "button"),
        )  # fmt: skip
        self.webhook_refusals = self._counter(
            "lookalike_webhook_refusals", "Webhook requests refused: a wrong secret token (403) or not an update (400)",
            "reason", ("secret", "malformed"),
        )  # fmt: skip
        self.index_products = Gauge("lookalike_index_products", "Products in the served index", registry=self.registry)
        #: ``time.time()`` of the last update handled (0: none yet), for /healthz
        self.last_update = 0.0
        self.started = time.time()

    def _counter(self, name: str, documentation: str, label: str, values: Iterable[str]) -> Counter:
        """A counter by ``label`` with each of ``values`` present at 0, so rate() works from the first scrape."""
        counter = Counter(name, documentation, [label], registry=self.registry)
        for value in values:
            counter.labels(value)
        return counter

    def answered(self, seconds: float) -> None:
        self.photos.labels("album").inc()
        self.photo_seconds.observe(seconds)

    def refused(self, reason: str, photo: bool = True) -> None:
        """A refusal; ``photo``: it was a photo's answer (a Next-5 page's refusal counts only as a refusal)."""
        self.refusals.labels(reason).inc()
        if photo:
            self.photos.labels("refused").inc()

    def scrape(self) -> bytes:
        """The ``/metrics`` body, in the Prometheus text format."""
        return generate_latest(self.registry)

    def watch_file_ids(self, counts: Callable[[], tuple[int, int]]) -> None:
        """Report ``counts()`` (hits, misses) of the file-id cache at each scrape."""
        self.registry.register(_FileIdCollector(counts))


class _FileIdCollector:
    def __init__(self, counts: Callable[[], tuple[int, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterable[Metric]:
        hits, misses = self.counts()
        family = CounterMetricFamily(
            "lookalike_file_id_cache", "Album photos sent by a cached Telegram file_id (hit) or uploaded (miss)", labels=["result"]
        )
        family.add_metric(["hit"], hits)
        family.add_metric(["miss"], misses)
        yield family


def health_response(state: dict[str, Any]) -> tuple[int, str, bytes]:
    """``/healthz``: (status, content type, body); 503 when not ok, so a load balancer or probe sees it."""
    return 200 if state.get("ok") else 503, "application/json", json.dumps(state).encode()


class MetricsServer:
    """``/metrics`` (Prometheus text format) and ``/healthz`` (JSON) on ``host:port``, on a daemon thread."""

    def __init__(self, metrics: BotMetrics, health: Callable[[], dict[str, Any]], host: str, port: int) -> None:
        metrics_ref, health_ref = metrics, health

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, metrics_ref.scrape())
                elif path == "/healthz":
                    self._send(*health_response(health_ref()))
                else:
                    self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics or /healthz\n")

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # scrapes every few seconds: not worth a log line
                return

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="metrics-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
