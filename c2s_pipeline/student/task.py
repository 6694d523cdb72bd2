"""A training step's forward: batch -> dict(loss, global_loss, local_loss, nel_loss, ce_loss).

L = L_g + L_l + L_p, L_p = NEL + ce_weight * CE on X = cat(tau cos(F, A_s), beta cos(F, A'_u)) (the seen part
the paper's alpha F^T A_s with student.seen_logits: dot),
the CE a mean over seen pixels plus one over latent pixels (`group_cross_entropy`; loss.ce_reduction),
with tau the student's logit scale (the paper's alpha; evaluation uses the same one).
With every C2S term off this is the plain supervised seen-only baseline on the dataset labels.
Only seen-class text embeddings ever enter this module.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from c2s_pipeline.cache.schema import LATENT
from c2s_pipeline.config import ConfigError, LossConfig
from c2s_pipeline.data.base import IGNORE_INDEX
from c2s_pipeline.student.latent import LatentEmbeddingGenerator
from c2s_pipeline.student.losses import (
    global_distill_loss,
    group_cross_entropy,
    local_distill_loss,
    nel_loss,
    region_prototypes,
)
from c2s_pipeline.student.model import Student, class_logits, scaled_cosine

LOSS_KEYS = ("loss", "global_loss", "local_loss", "nel_loss", "ce_loss")


class C2STask(nn.Module):
    seen_text: torch.Tensor  # buffers (register_buffer), declared for the type checker
    bank: torch.Tensor
    bank_count: torch.Tensor
    bank_ptr: torch.Tensor

    def __init__(self, student: Student, seen_text: torch.Tensor, cfg: LossConfig, logit_scale: float):
        super().__init__()
        self.student, self.cfg, self.logit_scale = student, cfg, logit_scale
        dim = seen_text.shape[1]
        if cfg.use_latent and dim % cfg.decoder_heads:
            raise ConfigError(
                f"loss.decoder_heads: {cfg.decoder_heads} does not divide the teacher's width {dim}; "
                "choose a divisor of it"
            )
        self.register_buffer("seen_text", F.normalize(seen_text.float(), dim=-1))  # (C_s, D)
        self.generator = (
            LatentEmbeddingGenerator(dim, cfg.decoder_layers, cfg.decoder_heads) if cfg.use_latent else None
        )
        self.register_buffer("bank", torch.zeros(cfg.bank_size, dim))
        self.register_buffer("bank_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("bank_ptr", torch.zeros((), dtype=torch.long))

    @property
    def distills(self) -> bool:
        return self.cfg.use_global or self.cfg.use_local or self.cfg.use_latent

    def head_parameters(self) -> list[nn.Parameter]:
        """Everything but the student's encoder (trained with the larger learning rate)."""
        encoder = {id(p) for p in self.student.encoder_parameters()}
        return [p for p in self.parameters() if id(p) not in encoder]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        with record_function("c2s.student"):
            feats = self.student(batch["image"])  # (B, D, h, w)
        zero = feats.new_zeros(())  # a term that is off: no gradient path through the map
        out = dict.fromkeys(LOSS_KEYS[1:], zero)
        if cfg.use_global:
            with record_function("c2s.global"):
                bank = self.bank[: int(self.bank_count)]
                out["global_loss"] = global_distill_loss(feats, batch["global_cls"], bank, cfg.temperature)
        if self.distills:
            with record_function("c2s.local"):
                protos, present = region_prototypes(feats, batch["pseudo_mask"], batch["region_class"].shape[1])
                if cfg.use_local:
                    out["local_loss"] = local_distill_loss(protos, present, batch["local_cls"], cfg.temperature)
            with record_function("c2s.class_logits"):
                logits, target, valid = self._pseudo_logits(feats, batch, protos, present)
        else:
            with record_function("c2s.class_logits"):
                logits = self._seen_logits(feats)
            target, valid = batch["label"], torch.ones(logits.shape[:2], dtype=torch.bool, device=feats.device)
        with record_function("c2s.nel"):
            logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
            out["nel_loss"] = nel_loss(logits, target, valid, cfg.focal_weight, cfg.dice_weight)
        with record_function("c2s.ce"):
            if (target != IGNORE_INDEX).any():
                masked = logits.masked_fill(~valid[..., None, None], -1e4)
                out["ce_loss"] = cfg.ce_weight * (
                    group_cross_entropy(masked, target, len(self.seen_text))
                    if cfg.ce_reduction == "grouped"
                    else F.cross_entropy(masked, target, ignore_index=IGNORE_INDEX)
                )
        out["loss"] = out["global_loss"] + out["local_loss"] + out["nel_loss"] + out["ce_loss"]
        if cfg.use_global:
            self._push_bank(batch["global_cls"])
        return out

    def _seen_logits(self, feats: torch.Tensor) -> torch.Tensor:
        """tau * cos(F, A_s), or alpha * F^T A_s for a student of the dot form: (B, D, h, w) -> (B, C_s, h, w)."""
        return class_logits(feats, self.seen_text, self.logit_scale, self.student.logit_form)

    def _pseudo_logits(self, feats, batch, protos, present):
        """Logits over [seen classes; this image's latent regions] and the pseudo-mask target."""
        cfg = self.cfg
        region_class = batch["region_class"]  # (B, R) seen index / LATENT / EMPTY
        num_seen = len(self.seen_text)
        latent = (region_class == LATENT) & present if cfg.use_latent else torch.zeros_like(present)
        rank = latent.long().cumsum(1) - 1  # (B, R) latent order per image
        slot_target = torch.where(region_class >= 0, region_class, torch.full_like(region_class, IGNORE_INDEX))
        slot_target = torch.where(latent, num_seen + rank, slot_target)
        slot_target = torch.cat([slot_target, slot_target.new_full((len(slot_target), 1), IGNORE_INDEX)], 1)
        pm = batch["pseudo_mask"].long().clamp(max=region_class.shape[1])  # NO_REGION -> extra slot R
        target = slot_target.gather(1, pm.flatten(1)).view_as(pm)  # (B, S, S)
        u_max = int(latent.sum(1).max()) if latent.any() else 0
        valid = torch.ones(len(feats), num_seen + u_max, dtype=torch.bool, device=feats.device)
        if u_max == 0:
            return self._seen_logits(feats), target, valid
        b_idx, r_idx = torch.nonzero(latent, as_tuple=True)
        queries = feats.new_zeros(len(feats), u_max, feats.shape[1])
        queries[b_idx, rank[b_idx, r_idx]] = protos[b_idx, r_idx]  # (B, U, D)
        query_pad = torch.ones(len(feats), u_max, dtype=torch.bool, device=feats.device)
        query_pad[b_idx, rank[b_idx, r_idx]] = False
        memory = torch.cat([batch["global_cls"][:, None], batch["local_cls"]], 1)  # (B, 1+R, D)
        memory_pad = torch.cat([query_pad.new_zeros(len(feats), 1), region_class < LATENT], 1)
        with record_function("c2s.latent_decoder"):
            generated = self.generator(queries, memory, query_pad, memory_pad)  # (B, U, D) = A'_u
        latent_text = cfg.beta * F.normalize(generated, dim=-1)  # (B, U, D)
        if self.student.logit_form == "cosine":
            # [tau cos(F, A_s); beta cos(F, A'_u)] in one matmul: each scale rides on its unit-norm text rows.
            scaled_text = torch.cat([self.logit_scale * self.seen_text.expand(len(feats), -1, -1), latent_text], 1)
            logits = scaled_cosine(feats, scaled_text)  # (B, C_s + U, h, w)
        else:  # the paper's X = cat(alpha F^T A_s, beta cos(F, A'_u))
            logits = torch.cat([self._seen_logits(feats), scaled_cosine(feats, latent_text)], 1)
        valid[:, num_seen:] = ~query_pad
        return logits, target, valid

    @torch.no_grad()
    def _push_bank(self, global_cls: torch.Tensor) -> None:
        """FIFO of the most recent teacher CLS tokens (never trained, never in the graph).

        Under DDP every rank pushes the tokens of all ranks, so the banks stay identical.
        """
        size = self.bank.shape[0]
        if size == 0:
            return
        global_cls = global_cls.detach()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts = [torch.empty_like(global_cls) for _ in range(dist.get_world_size())]
            dist.all_gather(parts, global_cls)
            global_cls = torch.cat(parts)
        for row in global_cls[-size:]:
            self.bank[int(self.bank_ptr)] = row
            self.bank_ptr.fill_((int(self.bank_ptr) + 1) % size)
        self.bank_count.fill_(min(int(self.bank_count) + len(global_cls), size))
