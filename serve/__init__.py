"""Serving side: vLLM engine launcher, Ray Serve router, reference backend, batch jobs.

Reads the contract in `adapters`; never imports `train`.
"""
