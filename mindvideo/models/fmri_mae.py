"""Masked brain modelling: a masked autoencoder over a 1D vector of fMRI voxels.

The voxel vector is cut into patches of `patch_size` voxels by a Conv1d (kernel = stride =
patch_size), each patch gets a fixed 1D sin-cos position, `mask_ratio` of the patches are hidden,
the encoder sees the visible ones, a lighter decoder fills the hidden ones in, and the loss is the
mean squared error on the hidden patches only. The transformer weights do not depend on the
number of patches (positions are computed, not learned), so a model pretrained on one voxel
space can encode vectors of another length.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mindvideo.errors import DataError
from mindvideo.models.encoder_config import MAEConfig


def sincos_positions(n_positions: int, dim: int) -> torch.Tensor:
    """Fixed 1D sin-cos position embedding: (n_positions, dim), half sines then half cosines."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    angles = torch.arange(n_positions, dtype=torch.float64)[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def n_patches(n_voxels: int, patch_size: int) -> int:
    return math.ceil(n_voxels / patch_size)


def wrap_pad(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Pad (..., voxels) to a multiple of patch_size by wrapping around to the first voxels."""
    extra = (-x.shape[-1]) % patch_size
    if extra == 0:
        return x
    reps = math.ceil(extra / x.shape[-1])
    return torch.cat([x, x.repeat(*([1] * (x.ndim - 1)), reps)[..., :extra]], dim=-1)


class Attention(nn.Module):
    """Multi-head self-attention through torch's scaled_dot_product_attention."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape  # (batch, tokens, dim)
        qkv = self.qkv(x).reshape(n, t, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (batch, heads, tokens, head_dim)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, t, d))

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The attention weights forward applies to x (batch, tokens, dim), written out
        (scaled_dot_product_attention never forms them): (batch, heads, queries, keys), each
        row summing to 1."""
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.num_heads, d // self.num_heads)
        q, k, _ = qkv.permute(2, 0, 3, 1, 4)  # each (batch, heads, tokens, head_dim)
        scores = q @ k.transpose(-2, -1) * (d // self.num_heads) ** -0.5
        return scores.float().softmax(dim=-1)


class Block(nn.Module):
    """Pre-norm transformer block: attention then MLP, each with a residual."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        hidden = max(1, int(dim * mlp_ratio))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed1D(nn.Module):
    """(batch, voxels) -> (batch, patches, dim): Conv1d with kernel = stride = patch_size."""

    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv1d(1, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = wrap_pad(x, self.patch_size)
        return self.proj(x[:, None]).transpose(1, 2)


class FmriMAE(nn.Module):
    """The masked autoencoder of MBM."""

    def __init__(self, cfg: MAEConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed1D(cfg.patch_size, cfg.embed_dim)
        self.blocks = nn.ModuleList(
            Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.embed_dim)
        self.decoder_embed = nn.Linear(cfg.embed_dim, cfg.decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.decoder_embed_dim))
        self.decoder_blocks = nn.ModuleList(
            Block(cfg.decoder_embed_dim, cfg.decoder_num_heads, cfg.mlp_ratio)
            for _ in range(cfg.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(cfg.decoder_embed_dim)
        self.decoder_pred = nn.Linear(cfg.decoder_embed_dim, cfg.patch_size)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.normal_(self.mask_token, std=0.02)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, voxels) -> (batch, patches, patch_size), wrap-padded: the targets."""
        x = wrap_pad(x, self.cfg.patch_size)
        return x.reshape(x.shape[0], -1, self.cfg.patch_size)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """All patches, no masking: (batch, voxels) -> (batch, patches, embed_dim)."""
        tokens = self.patch_embed(x)
        tokens = tokens + sincos_positions(tokens.shape[1], tokens.shape[2]).to(tokens)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def random_masking(
        self,
        n: int,
        p: int,
        ratio: float,
        generator: torch.Generator | None,
        device,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices of the kept patches (n, keep) and the mask (n, p), 1 = hidden. The lowest
        `keep` of the (n, p) uniform `noise` (drawn here if not given) are kept."""
        keep = max(1, int(round(p * (1 - ratio))))
        if noise is None:
            noise = torch.rand(n, p, generator=generator, device="cpu")
        noise = noise.to(device)
        order = noise.argsort(dim=1)
        kept = order[:, :keep].sort(dim=1).values
        mask = torch.ones(n, p, device=device)
        mask.scatter_(1, kept, 0.0)
        return kept, mask

    def forward(
        self,
        x: torch.Tensor,
        mask_ratio: float | None = None,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(batch, voxels) -> loss (MSE on hidden patches), prediction (batch, patches,
        patch_size) and mask (batch, patches; 1 = hidden). `noise` (batch, patches) fixes the
        masks (distributed training draws them for the global batch and slices)."""
        cfg = self.cfg
        ratio = cfg.mask_ratio if mask_ratio is None else mask_ratio
        tokens = self.patch_embed(x)  # (n, p, d)
        n, p, d = tokens.shape
        tokens = tokens + sincos_positions(p, d).to(tokens)
        kept, mask = self.random_masking(n, p, ratio, generator, tokens.device, noise)
        visible = torch.gather(tokens, 1, kept[..., None].expand(-1, -1, d))
        for block in self.blocks:
            visible = block(visible)
        visible = self.norm(visible)

        dec = self.decoder_embed(visible)  # (n, keep, dd)
        dd = dec.shape[-1]
        full = self.mask_token.expand(n, p, dd).clone()
        full.scatter_(1, kept[..., None].expand(-1, -1, dd), dec.to(full.dtype))  # bf16 autocast
        full = full + sincos_positions(p, dd).to(full)
        for block in self.decoder_blocks:
            full = block(full)
        pred = self.decoder_pred(self.decoder_norm(full))  # (n, p, patch_size)

        target = self.patchify(x)
        per_patch = ((pred - target) ** 2).mean(dim=-1)  # (n, p)
        hidden = mask.sum()
        loss = (per_patch * mask).sum() / hidden if hidden > 0 else per_patch.mean()
        return loss, pred, mask


MAE_WEIGHTS = "mae.safetensors"


MAE_CONFIG_FILE = "mae_config.json"


def seeded_mae(cfg: MAEConfig, seed: int) -> FmriMAE:
    """A fresh MAE whose initial weights come from `seed` alone (the global RNG untouched)."""
    import torch

    from mindvideo.models.fmri_mae import FmriMAE

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return FmriMAE(cfg)


def save_mae(out: Path, state: Mapping, model_cfg: MAEConfig) -> list[Path]:
    """Write an MAE as load_mbm reads it; the files written (relative to `out`)."""
    from safetensors.torch import save_file

    save_file(dict(state), str(Path(out) / MAE_WEIGHTS))
    (Path(out) / MAE_CONFIG_FILE).write_text(
        json.dumps(model_cfg.model_dump(mode="json"), indent=1)
    )
    return [Path(MAE_WEIGHTS), Path(MAE_CONFIG_FILE)]


def load_mbm(folder: Path, device: str = "cpu") -> FmriMAE:
    """The MAE an mbm stage wrote."""
    from safetensors.torch import load_file

    from mindvideo.models.fmri_mae import FmriMAE

    folder = Path(folder)
    if not (folder / MAE_WEIGHTS).exists():
        raise DataError(f"{folder}: no {MAE_WEIGHTS}; run the mbm stage first")
    cfg = MAEConfig.model_validate_json((folder / MAE_CONFIG_FILE).read_text())
    model = FmriMAE(cfg)
    model.load_state_dict(load_file(str(folder / MAE_WEIGHTS), device="cpu"))
    return model.to(device)
