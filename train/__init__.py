"""Training side: datasets, the synthetic generator, the RAFT trainer and evaluation.

Writes adapter folders (PEFT weights + manifest) that `serve` loads as they are;
reads the contract in `adapters`.
"""
