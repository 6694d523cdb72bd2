"""Latent embedding generation: latent-region prototypes query [C_g; C_l] to give text-like A'_u."""

from __future__ import annotations

import torch
from torch import nn


class LatentEmbeddingGenerator(nn.Module):
    """A small transformer decoder: queries F_u (B, U, D), memory [C_g; C_l] (B, 1+R, D) -> A'_u (B, U, D)."""

    def __init__(self, embed_dim: int, layers: int = 2, heads: int = 4):
        super().__init__()
        layer = nn.TransformerDecoderLayer(
            embed_dim, heads, dim_feedforward=2 * embed_dim, dropout=0.0, batch_first=True, norm_first=True
        )
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.out = nn.Linear(embed_dim, embed_dim)

    def forward(
        self, queries: torch.Tensor, memory: torch.Tensor, query_pad: torch.Tensor, memory_pad: torch.Tensor
    ) -> torch.Tensor:
        """Padded entries (True in the pad masks) neither attend nor are attended to."""
        # A row of only padding would make attention NaN; unmask one entry (its output is unused).
        query_pad = query_pad.clone()
        query_pad[query_pad.all(1), 0] = False
        x = self.decoder(queries, memory, tgt_key_padding_mask=query_pad, memory_key_padding_mask=memory_pad)
        return self.out(x)
