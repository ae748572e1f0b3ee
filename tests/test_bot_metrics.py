"""The /metrics and /healthz server on its own: real HTTP, parsed by the Prometheus client's own parser."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.metrics import REFUSAL_REASONS, BotMetrics, MetricsServer


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture
def served():
    metrics = BotMetrics()
    state = {"ok": True, "products": 7}
    server = MetricsServer(metrics, lambda: dict(state), "127.0.0.1", 0).start()
    try:
        yield metrics, state, server.port
    finally:
        server.stop()


def test_counters_reach_the_scrape_with_every_refusal_reason_present(served) -> None:
    """Every reason is there at 0 from the start (so rate() works at once); answers and refusals count apart."""
    metrics, _, port = served
    metrics.answered(0.12)
    metrics.answered(0.4)
    metrics.refused("too_big")
    metrics.refused("rate_limited", photo=False)  # a Next-5 press, not a photo
    metrics.batch_photos.observe(3)
    metrics.index_products.set(44_441)
    metrics.watch_file_ids(lambda: (8, 2))
    status, text = get(port, "/metrics")
    assert status == 200
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("lookalike_photos_total", (("outcome", "album"),))] == 2
    assert samples[("lookalike_photos_total", (("outcome", "refused"),))] == 1
    assert {reason for (name, labels) in samples if name == "lookalike_refusals_total" for _, reason in labels} == set(REFUSAL_REASONS)
    assert samples[("lookalike_refusals_total", (("reason", "too_big"),))] == 1
    assert samples[("lookalike_refusals_total", (("reason", "rate_limited"),))] == 1
    assert samples[("lookalike_photo_to_album_seconds_count", ())] == 2
    assert samples[("lookalike_photo_to_album_seconds_bucket", (("le", "0.2"),))] == 1
    assert samples[("lookalike_forward_pass_photos_bucket", (("le", "4.0"),))] == 1
    assert samples[("lookalike_index_products", ())] == 44_441
    assert samples[("lookalike_file_id_cache_total", (("result", "hit"),))] == 8
    assert samples[("lookalike_file_id_cache_total", (("result", "miss"),))] == 2


def test_health_is_503_when_not_ok_and_other_paths_are_404(served) -> None:
    """A load balancer or supervisor reads the status code; the body says what is wrong."""
    _, state, port = served
    status, body = get(port, "/healthz")
    assert status == 200 and json.loads(body) == {"ok": True, "products": 7}
    state["ok"] = False
    status, body = get(port, "/healthz?verbose=1")
    assert status == 503 and json.loads(body)["ok"] is False
    assert get(port, "/")[0] == 404
