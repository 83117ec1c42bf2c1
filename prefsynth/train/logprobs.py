"""Sequence log-probabilities from packed, padding-free batches, in chunks over completion tokens.

All sequences of a micro-batch go into one row with position ids restarting at 0 for each; with
no attention mask, transformers builds a block-diagonal causal mask from those position ids
(or flash-attention varlen uses them), so sequences never attend to each other and no padding
token is computed. Only completion positions reach the LM head, `chunk` tokens at a time, each
chunk checkpointed: the full [tokens x vocabulary] logits are never held, in the forward or the
backward pass.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint


def _chunk_logps(hidden: torch.Tensor, labels: torch.Tensor, head: torch.nn.Module) -> torch.Tensor:
    logits = head(hidden).float()
    return logits.log_softmax(-1).gather(-1, labels[:, None])[:, 0]


class CompletionLogps(torch.nn.Module):
    """A causal LM as one module from a packed row to per-sequence completion log-probs. FSDP
    shards the decoder layers and makes this the root unit, so the embeddings, final norm and LM
    head (tied or not) are gathered together around the one forward call that uses them."""

    def __init__(self, model: torch.nn.Module, chunk: int = 1024):
        super().__init__()
        self.model, self.chunk = model, chunk

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor, owner: torch.Tensor,
                count: int) -> torch.Tensor:
        hidden = self.model.get_decoder()(input_ids=ids, position_ids=positions, use_cache=False).last_hidden_state[0]
        states, labels = hidden[targets - 1], ids[0, targets]  # the state before a token predicts it
        head = self.model.get_output_embeddings()
        parts = []
        for begin in range(0, len(targets), self.chunk):
            part = (states[begin: begin + self.chunk], labels[begin: begin + self.chunk], head)
            parts.append(checkpoint(_chunk_logps, *part, use_reentrant=False) if torch.is_grad_enabled()
                         else _chunk_logps(*part))
        per_token = torch.cat(parts)
        return torch.zeros(count, device=per_token.device, dtype=per_token.dtype).index_add(0, owner, per_token)


def packed_inputs(sequences: list[list[int]], completion_start, device) -> tuple[torch.Tensor, ...]:
    """Token ids and restarting positions of one packed row, the row positions of every
    completion token, and the sequence each belongs to."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    starts = np.asarray(completion_start, dtype=np.int64)
    offsets = np.cumsum(lengths) - lengths
    positions = np.arange(lengths.sum()) - np.repeat(offsets, lengths)
    counts = lengths - starts
    targets = np.repeat(offsets + starts, counts) + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    ids = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences])
    as_tensor = lambda values: torch.from_numpy(values).to(device)  # noqa: E731
    return (as_tensor(ids)[None], as_tensor(positions)[None], as_tensor(targets),
            as_tensor(np.repeat(np.arange(len(sequences)), counts)))


def sequence_logps(model, sequences: list[list[int]], completion_start, chunk: int = 1024) -> torch.Tensor:
    """Sum of log p(token | prefix) over each sequence's completion tokens: shape [len(sequences)].
    `model` is a causal LM or a CompletionLogps (which keeps its own chunk size)."""
    module = model if isinstance(model, CompletionLogps) else CompletionLogps(model, chunk)
    device = next(module.parameters()).device
    return module(*packed_inputs(sequences, completion_start, device), len(sequences))
