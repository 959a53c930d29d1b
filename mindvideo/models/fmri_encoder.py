"""The spatiotemporal fMRI encoder: a window of fMRI frames -> the generator's condition.

Tokens (n, w, p, b): batch, window frames, voxel patches, embedding. Each block applies spatial
attention over the patches of every frame ((n*w, p, b)), temporal attention over the frames of
every patch ((n*p, w, b); optional), then an MLP. The spatial part has the MBM encoder's layout,
so its weights load from a pretrained `FmriMAE`; the temporal attention's output projection
starts at zero, so a freshly initialised encoder computes exactly what the MAE encoder computes
for each frame. A projection head maps the w*p tokens to the conditioning shape of the
generator (tokens x dim: 77 x 768 for Stable Diffusion 1.5), and a CLIP head pools the condition
into CLIP's embedding space for contrastive learning.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from mindvideo.distributed import cpu_weights
from mindvideo.errors import DataError
from mindvideo.models.encoder_config import EncoderConfig, MAEConfig
from mindvideo.models.fmri_mae import (
    Attention,
    Block,
    FmriMAE,
    PatchEmbed1D,
    n_patches,
    sincos_positions,
)


class SpatioTemporalBlock(Block):
    """Spatial attention per frame, temporal attention per patch (optional), MLP.

    The spatial attention and MLP are the MBM block's (same layers, same names), so MBM weights
    load by name."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, temporal: bool):
        super().__init__(dim, num_heads, mlp_ratio)
        self.temporal = temporal
        if temporal:
            self.norm_t = nn.LayerNorm(dim)
            self.temporal_attn = Attention(dim, num_heads)
            nn.init.zeros_(self.temporal_attn.proj.weight)  # starts as the per-frame model
            nn.init.zeros_(self.temporal_attn.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, w, p, b = x.shape  # (batch, window, patches, embed)
        s = x.reshape(n * w, p, b)
        s = s + self.attn(self.norm1(s))
        x = s.reshape(n, w, p, b)
        if self.temporal:
            t = x.permute(0, 2, 1, 3).reshape(n * p, w, b)  # (batch*patches, window, embed)
            t_in = self.norm_t(t) + sincos_positions(w, b).to(t)
            t = t + self.temporal_attn(t_in)
            x = t.reshape(n, p, w, b).permute(0, 2, 1, 3)
        return x + self.mlp(self.norm2(x))


class FmriEncoder(nn.Module):
    """(batch, window, voxels) -> condition (batch, cond_tokens, cond_dim)."""

    def __init__(
        self,
        mae: MAEConfig,
        cfg: EncoderConfig,
        n_voxels: int,
        window: int,
        clip_dim: int | None = None,
    ):
        super().__init__()
        self.mae_cfg, self.cfg = mae, cfg
        self.n_voxels, self.window = n_voxels, window
        self.patch_embed = PatchEmbed1D(mae.patch_size, mae.embed_dim)
        self.blocks = nn.ModuleList(
            SpatioTemporalBlock(mae.embed_dim, mae.num_heads, mae.mlp_ratio, cfg.temporal_attention)
            for _ in range(mae.depth)
        )
        self.norm = nn.LayerNorm(mae.embed_dim)
        tokens = window * n_patches(n_voxels, mae.patch_size)
        # Projection head: mix the w*p tokens into cond_tokens, then widen to cond_dim.
        self.token_mix = nn.Conv1d(tokens, cfg.cond_tokens, kernel_size=1)
        self.to_cond = nn.Linear(mae.embed_dim, cfg.cond_dim)
        self.clip_head = nn.Linear(cfg.cond_dim, clip_dim) if clip_dim else None
        self.adapter: nn.Module | None = None  # maps the condition to the generator's tokens

    @property
    def cond_shape(self) -> tuple[int, int]:
        """(tokens, dim) of what forward returns: the adapter's output when there is one."""
        if self.adapter is not None:
            return tuple(self.adapter.out_shape)
        return (self.cfg.cond_tokens, self.cfg.cond_dim)

    def load_mbm(self, mae: FmriMAE) -> list[str]:
        """Copy the MBM encoder's weights (patch embedding, blocks, norm); returns the names
        of the encoder's parameters that stay freshly initialised."""
        own = self.state_dict()
        source = {
            k: v
            for k, v in mae.state_dict().items()
            if k.startswith(("patch_embed.", "blocks.", "norm.")) and k in own
        }
        for k, v in source.items():
            if own[k].shape != v.shape:
                raise ValueError(
                    f"MBM weight {k}: shape {tuple(v.shape)} but the encoder has "
                    f"{tuple(own[k].shape)}; the MBM and encoder sizes must match"
                )
        self.load_state_dict(source, strict=False)
        return sorted(set(own) - set(source))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, window, voxels) -> tokens (batch, window, patches, embed)."""
        n, w, v = x.shape
        if w != self.window or v != self.n_voxels:
            raise ValueError(
                f"encoder built for windows of {self.window} frames x {self.n_voxels} voxels, "
                f"got {w} x {v}"
            )
        tokens = self.patch_embed(x.reshape(n * w, v))  # (n*w, p, b)
        p, b = tokens.shape[1:]
        tokens = tokens + sincos_positions(p, b).to(tokens)
        tokens = tokens.reshape(n, w, p, b)
        recompute = self.cfg.checkpoint_activations and torch.is_grad_enabled()
        for block in self.blocks:
            if recompute:
                tokens = checkpoint(block, tokens, use_reentrant=False)
            else:
                tokens = block(tokens)
        return self.norm(tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The condition the generator reads (through the adapter when one is attached)."""
        cond = self.condition(x)
        return cond if self.adapter is None else self.adapter(cond)

    def condition(self, x: torch.Tensor) -> torch.Tensor:
        """The projection head's condition (batch, cond_tokens, cond_dim), before any adapter:
        what contrastive learning aligns."""
        tokens = self.features(x)
        n, w, p, b = tokens.shape
        mixed = self.token_mix(tokens.reshape(n, w * p, b))  # (n, cond_tokens, b)
        return self.to_cond(mixed)

    def clip_embedding(self, cond: torch.Tensor) -> torch.Tensor:
        """The condition pooled into CLIP's space, L2-normalised: (batch, clip_dim)."""
        if self.clip_head is None:
            raise ValueError("encoder built without clip_dim: no CLIP head")
        return F.normalize(self.clip_head(cond.mean(dim=1)), dim=-1)


ENCODER_WEIGHTS = "encoder.safetensors"


ENCODER_FILE = "encoder.json"  # sizes, window, voxels: what load_encoder needs


VOXELS_FILE = "voxels.npy"  # the cortical vertices the encoder reads, in order


def load_encoder(folder: Path, device: str = "cpu") -> tuple[FmriEncoder, np.ndarray]:
    """The encoder a contrastive (or cotrain) stage wrote, and the voxels it reads."""
    from safetensors.torch import load_file

    from mindvideo.models.fmri_encoder import FmriEncoder

    folder = Path(folder)
    for name in (ENCODER_WEIGHTS, ENCODER_FILE, VOXELS_FILE):
        if not (folder / name).exists():
            raise DataError(f"{folder}: no {name}; run the contrastive stage first")
    info = json.loads((folder / ENCODER_FILE).read_text())
    encoder = FmriEncoder(
        MAEConfig.model_validate(info["model"]),
        EncoderConfig.model_validate(info["encoder"]),
        info["n_voxels"],
        info["window"],
        info["clip_dim"],
    )
    if info.get("adapter"):
        from mindvideo.models.adapter import ConditionAdapter

        spec = info["adapter"]
        encoder.adapter = ConditionAdapter(spec["in_shape"], spec["out_shape"], spec["rank"])
    encoder.load_state_dict(load_file(str(folder / ENCODER_WEIGHTS), device="cpu"))
    return encoder.to(device).eval(), np.load(folder / VOXELS_FILE)


def save_encoder(out: Path, encoder: FmriEncoder, voxels: np.ndarray) -> list[Path]:
    """Write an encoder as load_encoder reads it; the files (relative to `out`)."""
    from safetensors.torch import save_file

    out = Path(out)
    save_file(cpu_weights(encoder), str(out / ENCODER_WEIGHTS))
    np.save(out / VOXELS_FILE, voxels)
    info = {
        "model": encoder.mae_cfg.model_dump(mode="json"),
        # how it was trained, not what it is: the stage that loads it decides
        "encoder": encoder.cfg.model_dump(mode="json", exclude={"checkpoint_activations"}),
        "n_voxels": encoder.n_voxels,
        "window": encoder.window,
        "clip_dim": encoder.clip_head.out_features if encoder.clip_head is not None else None,
        "adapter": encoder.adapter.spec() if encoder.adapter is not None else None,
    }
    (out / ENCODER_FILE).write_text(json.dumps(info, indent=1))
    return [Path(ENCODER_WEIGHTS), Path(ENCODER_FILE), Path(VOXELS_FILE)]
