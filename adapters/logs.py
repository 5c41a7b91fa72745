"""The one logging setup for every `kidsart` process (CLI, router replicas, workers)."""

from __future__ import annotations

import logging
import os

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_NOISY = ("httpx", "httpcore", "urllib3", "filelock", "ray", "transformers", "peft")


def setup_logging(level: str | int | None = None) -> None:
    """Configure the root logger once; level from the argument or KIDSART_LOG_LEVEL (default INFO)."""
    level = level or os.environ.get("KIDSART_LOG_LEVEL", "INFO")
    root = logging.getLogger()
    if not getattr(root, "_kidsart_configured", False):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
        root.handlers = [handler]
        root._kidsart_configured = True  # type: ignore[attr-defined]
    root.setLevel(level)
    for name in _NOISY:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger(name).level))
