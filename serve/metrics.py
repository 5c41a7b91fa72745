"""Prometheus metrics of the router (served at GET /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "kidsart_requests_total", "Router requests by route and HTTP status.", ["route", "status"], registry=REGISTRY
)
LATENCY = Histogram(
    "kidsart_request_latency_seconds",
    "End-to-end router latency by route.",
    ["route"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128),
    registry=REGISTRY,
)
ERRORS = Counter("kidsart_errors_total", "Errors by kind.", ["kind"], registry=REGISTRY)
SCORES = Histogram(
    "kidsart_score",
    "RAIL expected scores by dimension.",
    ["dimension"],
    buckets=(1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5),
    registry=REGISTRY,
)
FEEDBACK = Counter("kidsart_feedback_comments_total", "Comments written by the feedback adapter.", registry=REGISTRY)
IMAGES = Counter("kidsart_images_scored_total", "Images scored (all requested dimensions).", registry=REGISTRY)
INFLIGHT = Gauge("kidsart_images_inflight", "Images admitted and not yet answered (this replica).", registry=REGISTRY)
ENGINE_LATENCY = Histogram(
    "kidsart_engine_request_latency_seconds",
    "Latency of one engine request (a dimension's score or a comment).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32),
    registry=REGISTRY,
)
