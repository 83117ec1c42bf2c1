"""Sequence log-probabilities from packed, padding-free batches, in chunks over completion tokens.

All sequences of a micro-batch go into one row with position ids restarting at 0 for each; with
no attention mask, transformers builds a block-diagonal causal mask from those position ids
(or flash-attention varlen uses them), so sequences never attend to each other and no padding
token is computed. Only completion positions reach the LM head, `chunk` tokens at a time, each
chunk checkpointed: the full [tokens x vocabulary] logits are never held, in the forward or the
backward pass.
"""
from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


def _chunk_logps(hidden: torch.Tensor, labels: torch.Tensor, head: torch.nn.Module) -> torch.Tensor:
    logits = head(hidden).float()
    return logits.log_softmax(-1).gather(-1, labels[:, None])[:, 0]


def packed_inputs(sequences: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([t for seq in sequences for t in seq], device=device)[None]
    positions = torch.cat([torch.arange(len(seq), device=device) for seq in sequences])[None]
    return ids, positions


def sequence_logps(model, sequences: list[list[int]], completion_start, chunk: int = 1024) -> torch.Tensor:
    """Sum of log p(token | prefix) over each sequence's completion tokens: shape [len(sequences)]."""
    device = next(model.parameters()).device
    ids, positions = packed_inputs(sequences, device)
    hidden = model.get_decoder()(input_ids=ids, position_ids=positions, use_cache=False).last_hidden_state[0]
    offsets, index, owner = 0, [], []
    for i, (seq, start) in enumerate(zip(sequences, completion_start)):
        index.append(torch.arange(offsets + int(start), offsets + len(seq), device=device))
        owner.append(torch.full((len(seq) - int(start),), i, device=device))
        offsets += len(seq)
    targets, owner = torch.cat(index), torch.cat(owner)
    states, labels = hidden[targets - 1], ids[0, targets]  # the state before a token predicts it
    head = model.get_output_embeddings()
    parts = []
    for begin in range(0, len(targets), chunk):
        part = (states[begin: begin + chunk], labels[begin: begin + chunk], head)
        parts.append(checkpoint(_chunk_logps, *part, use_reentrant=False) if torch.is_grad_enabled() else _chunk_logps(*part))
    per_token = torch.cat(parts)
    return torch.zeros(len(sequences), device=device, dtype=per_token.dtype).index_add(0, owner, per_token)
