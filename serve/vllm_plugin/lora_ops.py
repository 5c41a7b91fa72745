"""Grouped CPU LoRA ops: drop-in replacements for vLLM's torch_ops SGMV functions.

vLLM's PyTorch-native LoRA ops (``vllm/lora/ops/torch_ops/lora_ops.py``, used by
``PunicaWrapperCPU``) expand the per-segment adapter indices to one index per
token and then gather a full copy of that token's adapter matrix
(``lora_weights[token_indices]``, shape ``tokens x out x in``) before a batched
``einsum``. For a 256-token prompt and a rank-8 adapter on a 512-wide projection
that is a 4 MiB copy per projection per layer, which dominates a CPU forward pass.

These versions keep vLLM's signatures and semantics but group the tokens by
adapter and run one matrix multiply per adapter present in the batch, reading
each adapter's matrix in place (no per-token copy). A contiguous run of tokens is
used as a slice; scattered rows are gathered once (``tokens x in``), and an
accumulating expand assembles its delta densely (``index_copy_``) and adds it with
one ``add_`` (a scattered ``index_add_`` into a column slice is slow on CPU).

Semantics (same as vLLM's ops for every token with an adapter index >= 0):

- ``sgmv_shrink``:       ``out[t, :r] = scaling * x[t] @ A[i_t].T``
- ``sgmv_expand``:       ``out[t, :c] (+)= x[t] @ B[i_t][:c].T`` with ``c = min(out cols, B rows)``
- ``sgmv_expand_slice``: ``out[t, o:o+s] (+)= x[t] @ B[i_t].T``

A token whose adapter index is -1 ("no LoRA") gets no LoRA contribution: shrink
and non-accumulating expand write zeros for it, accumulating expand leaves it
untouched. (vLLM's own torch ops index the weights with -1, i.e. apply the *last*
adapter slot to such tokens when a batch mixes base-model and LoRA requests.)
"""

from __future__ import annotations

import torch

__all__ = ["sgmv_shrink", "sgmv_expand", "sgmv_expand_slice", "token_groups"]


def token_groups(
    b_seq_start_loc: torch.Tensor, seq_len_tensor: torch.Tensor, lora_indices_tensor: torch.Tensor
) -> tuple[list[tuple[int, slice | torch.Tensor]], slice | torch.Tensor | None]:
    """Group token rows by adapter from SGMV segment metadata.

    Returns ``([(adapter_index, rows), ...], no_lora_rows)`` where ``rows`` is a
    slice when the adapter's tokens are one contiguous run and an index tensor
    otherwise; ``no_lora_rows`` covers the tokens with index -1 (None if none).
    """
    starts = b_seq_start_loc.tolist()
    lengths = seq_len_tensor.tolist()
    indices = lora_indices_tensor.tolist()
    segments: dict[int, list[tuple[int, int]]] = {}
    for start, length, index in zip(starts, lengths, indices, strict=True):
        if length <= 0:
            continue
        segments.setdefault(int(index) if index >= 0 else -1, []).append((int(start), int(length)))

    def rows_of(runs: list[tuple[int, int]]) -> slice | torch.Tensor:
        runs.sort()
        merged: list[list[int]] = []
        for start, length in runs:
            if merged and merged[-1][0] + merged[-1][1] == start:
                merged[-1][1] += length
            else:
                merged.append([start, length])
        if len(merged) == 1:
            return slice(merged[0][0], merged[0][0] + merged[0][1])
        return torch.cat([torch.arange(s, s + n, dtype=torch.long) for s, n in merged])

    no_lora = rows_of(segments.pop(-1)) if -1 in segments else None
    return [(index, rows_of(runs)) for index, runs in sorted(segments.items())], no_lora


def _adapter_matrix(weights: torch.Tensor, index: int, dtype: torch.dtype) -> torch.Tensor:
    """(out, in) matrix of one adapter slot; weights are (slots, out, in) or (slots, 1, out, in)."""
    matrix = weights[index]
    if matrix.dim() == 3:
        matrix = matrix.squeeze(0)
    return matrix if matrix.dtype == dtype else matrix.to(dtype)


def _rows(x: torch.Tensor, rows: slice | torch.Tensor) -> torch.Tensor:
    return x[rows] if isinstance(rows, slice) else x.index_select(0, rows)


def _write(out: torch.Tensor, rows: slice | torch.Tensor, values: torch.Tensor, add: bool) -> None:
    """out[rows] = values (or += values); `out` may be a column-sliced view."""
    if isinstance(rows, slice):
        if add:
            out[rows] += values
        else:
            out[rows] = values
    elif add:
        out.index_add_(0, rows, values)
    else:
        out.index_copy_(0, rows, values)


def _zero(out: torch.Tensor, rows: slice | torch.Tensor | None) -> None:
    if rows is None:
        return
    if isinstance(rows, slice):
        out[rows] = 0
    else:
        out.index_fill_(0, rows, 0)


def sgmv_shrink(
    inputs: torch.Tensor,
    lora_a_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    b_seq_start_loc: torch.Tensor,
    seq_len_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    scaling: float,
):
    dtype = output_tensor.dtype
    groups, no_lora = token_groups(b_seq_start_loc, seq_len_tensor, lora_indices_tensor)
    rank = lora_a_weights.shape[-2]
    out = output_tensor[:, :rank]
    for index, rows in groups:
        x = _rows(inputs, rows)
        x = x if x.dtype == dtype else x.to(dtype)
        y = torch.matmul(x, _adapter_matrix(lora_a_weights, index, dtype).t())
        if scaling != 1.0:
            y.mul_(scaling)
        _write(out, rows, y, add=False)
    _zero(out, no_lora)


def _expand(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    out: torch.Tensor,
    groups: list[tuple[int, slice | torch.Tensor]],
    no_lora: slice | torch.Tensor | None,
    columns: int,
    add_inputs: bool,
) -> None:
    dtype = out.dtype
    scattered = any(not isinstance(rows, slice) for _, rows in groups)
    if scattered and add_inputs:
        # Accumulating into scattered rows of a column slice (index_add_) is a slow
        # scatter on CPU: assemble the LoRA delta densely with index_copy_ instead,
        # then add it with one contiguous add_.
        covered = sum(_count(rows) for _, rows in groups) + (_count(no_lora) if no_lora is not None else 0)
        if covered == out.shape[0]:
            delta = out.new_empty(out.shape)
            for index, rows in groups:
                x = _rows(inputs, rows)
                x = x if x.dtype == dtype else x.to(dtype)
                _write(
                    delta, rows, torch.matmul(x, _adapter_matrix(lora_b_weights, index, dtype)[:columns].t()), add=False
                )
            _zero(delta, no_lora)
            out.add_(delta)
            return
    for index, rows in groups:
        x = _rows(inputs, rows)
        x = x if x.dtype == dtype else x.to(dtype)
        matrix = _adapter_matrix(lora_b_weights, index, dtype)[:columns]
        y = torch.matmul(x, matrix.t())
        _write(out, rows, y, add=add_inputs)
    if not add_inputs:
        _zero(out, no_lora)


def _count(rows: slice | torch.Tensor) -> int:
    return rows.stop - rows.start if isinstance(rows, slice) else int(rows.numel())


def sgmv_expand(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    b_seq_start_loc: torch.Tensor,
    seq_len_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    add_inputs: bool = False,
):
    groups, no_lora = token_groups(b_seq_start_loc, seq_len_tensor, lora_indices_tensor)
    # LoRA adapter and model may add different amounts of padding to the output.
    columns = min(lora_b_weights.shape[-2], output_tensor.shape[1])
    _expand(inputs, lora_b_weights, output_tensor[:, :columns], groups, no_lora, columns, add_inputs)


def sgmv_expand_slice(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    b_seq_start_loc: torch.Tensor,
    seq_len_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = False,
):
    groups, no_lora = token_groups(b_seq_start_loc, seq_len_tensor, lora_indices_tensor)
    out = output_tensor[:, slice_offset : slice_offset + slice_size]
    _expand(inputs, lora_b_weights, out, groups, no_lora, slice_size, add_inputs)
