"""Share one decoded image between the requests that carry the same data URL.

The router sends an artwork's nine dimension requests with the same PNG data URL;
vLLM's processor and encoder caches already make the image preprocessed and
encoded once, but its frontend (MediaConnector) base64-decodes and PNG-decodes the
URL for every request. This keeps the last few decoded `data:` images in a small
LRU keyed by a hash of the URL (and the requested image mode), so the nine requests
share one decode. Only inline data URLs are cached (never http(s)/file URLs,
whose content may change); the PIL image is shared read-only, as vLLM's processing
converts rather than mutates. Enabled with KIDSART_SHARE_DECODED_IMAGES=1.
"""
from __future__ import annotations

import functools
import hashlib
import os
import sys
import threading
from collections import OrderedDict

ENV_FLAG = "KIDSART_SHARE_DECODED_IMAGES"
MAX_ENTRIES = int(os.environ.get("KIDSART_DECODED_IMAGE_CACHE_SIZE", "64"))


class DecodedImageCache:
    def __init__(self, max_entries: int = MAX_ENTRIES):
        self.max_entries = max_entries
        self._items: OrderedDict[tuple[str, object], object] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(url: str, image_mode) -> tuple[str, object] | None:
        if not isinstance(url, str) or not url.startswith("data:"):
            return None
        return hashlib.blake2b(url.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest(), image_mode

    def get(self, key):
        with self._lock:
            image = self._items.get(key)
            if image is not None:
                self._items.move_to_end(key)
                self.hits += 1
            else:
                self.misses += 1
            return image

    def put(self, key, image) -> None:
        with self._lock:
            self._items[key] = image
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)


CACHE = DecodedImageCache()


def install() -> bool:
    try:
        from vllm.multimodal.media.connector import MediaConnector
    except ImportError:
        return False
    sync_fetch, async_fetch = MediaConnector.fetch_image, MediaConnector.fetch_image_async
    if getattr(sync_fetch, "_kidsart_shared", False):
        return True

    @functools.wraps(sync_fetch)
    def fetch_image(self, image_url, *args, image_mode="RGB", **kwargs):
        key = CACHE.key(image_url, image_mode)
        if key is None or args or kwargs:
            return sync_fetch(self, image_url, *args, image_mode=image_mode, **kwargs)
        image = CACHE.get(key)
        if image is None:
            image = sync_fetch(self, image_url, image_mode=image_mode)
            CACHE.put(key, image)
        return image

    inflight: dict = {}  # key -> Future of a decode in progress (the nine requests arrive together)

    @functools.wraps(async_fetch)
    async def fetch_image_async(self, image_url, *args, image_mode="RGB", **kwargs):
        import asyncio

        key = CACHE.key(image_url, image_mode)
        if key is None or args or kwargs:
            return await async_fetch(self, image_url, *args, image_mode=image_mode, **kwargs)
        image = CACHE.get(key)
        if image is not None:
            return image
        pending = inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        pending = asyncio.get_running_loop().create_future()
        pending.add_done_callback(lambda f: f.cancelled() or f.exception())  # never "exception not retrieved"
        inflight[key] = pending
        try:
            image = await async_fetch(self, image_url, image_mode=image_mode)
            CACHE.put(key, image)
            pending.set_result(image)
            return image
        except BaseException as exc:
            if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
                pending.cancel()
            else:
                pending.set_exception(exc)
            raise
        finally:
            inflight.pop(key, None)

    fetch_image._kidsart_shared = True
    fetch_image_async._kidsart_shared = True
    MediaConnector.fetch_image = fetch_image
    MediaConnector.fetch_image_async = fetch_image_async
    print(f"kidsart.vllm_plugin: decoded data-URL images shared between requests in pid {os.getpid()}", file=sys.stderr, flush=True)
    return True
