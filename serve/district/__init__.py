"""Batch scoring of a whole district: discover inputs, score them durably, export and report.

- `inputs`: a folder tree, a CSV manifest or an OpenAI batch file -> one `InputItem` per submission
  (folder levels become school / grade / class columns, content hashes, duplicates).
- `openai_batch`: an OpenAI batch input file's lines as inputs, checked against the run, and the
  Batch API's output and error files written from the journal (`--openai-batch-output`).
- `journal`: an fsync'd JSONL journal; a result counts only once it is on disk,
  so a run killed at any moment resumes exactly where it stopped.
- `runner`: asyncio + httpx client of the router with retries and backoff.
- `ray_pipeline`: the same job as a Ray Data pipeline, for districts beyond one machine.
- `export`: `scores.csv` / `scores.parquet`, one row per input.
- `report`: a self-contained `report.html` (matplotlib plots and thumbnails embedded).

Nothing here imports `train/`; heavy libraries (pandas, matplotlib, Ray) are
imported inside the functions that use them.
"""
