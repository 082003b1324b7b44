"""The temporal transformer EasyAnimate v1 inserts into every PixArt block: sinusoidal frame positions, temporal self-attention over 2x2 blocks of tokens ("VanillaGrid"), and a zero-initialised output so a fresh module is the identity."""

# Frozen copy of easyanimate/motion_module.py at commit ab06025 (before the speed work), exported from ../nbs/02_motion_module.ipynb.

# %% ../nbs/02_motion_module.ipynb #109d43d1
from __future__ import annotations
import math
import torch
from torch import nn
from einops import rearrange
from diffusers.models.attention import FeedForward
from easyanimate.utils import EasyAnimateError
from .attention import Attention

# %% auto #0
__all__ = ['V1_MOTION_MODULE_KWARGS', 'MOTION_MODULE_TYPES', 'sinusoidal_table', 'PositionalEncoding', 'check_grid',
           'grid_to_sequences', 'sequences_to_grid', 'TemporalAttention', 'TemporalBlock', 'TemporalTransformer',
           'MotionModule', 'get_motion_module']

# %% ../nbs/02_motion_module.ipynb #9329c0b4
def sinusoidal_table(max_len, dim):
    "The [1, max_len, dim] sinusoidal position table of v1 (sin at even, cos at odd channels)."
    if dim % 2: raise EasyAnimateError(f"the sinusoidal position table needs an even width, got {dim}")
    position = torch.arange(max_len).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    pe = torch.zeros(1, max_len, dim)
    pe[0, :, 0::2] = torch.sin(position * div_term)
    pe[0, :, 1::2] = torch.cos(position * div_term)
    return pe

# %% ../nbs/02_motion_module.ipynb #7729c46e
class PositionalEncoding(nn.Module):
    "Adds the sinusoidal table to [N, frames, D] sequences along the frame axis."
    def __init__(self, dim, max_len=4096):
        super().__init__()
        self.register_buffer('pe', sinusoidal_table(max_len, dim))

    def forward(self, x):
        if x.shape[1] > self.pe.shape[1]:
            raise EasyAnimateError(f"{x.shape[1]} frames do not fit the temporal position table of {self.pe.shape[1]} rows; "
                                   f"use at most {self.pe.shape[1]} frames or a larger temporal_position_encoding_max_len")
        return x + self.pe[:, :x.shape[1]]

# %% ../nbs/02_motion_module.ipynb #66f7012b
def check_grid(height, width, block_size):
    if height % block_size or width % block_size:
        raise EasyAnimateError(f"the motion module groups {block_size}x{block_size} blocks of tokens, so the token grid must be divisible by "
                               f"{block_size}; got {height}x{width} tokens (latent size / patch size)")

def grid_to_sequences(x, frames, height, width, block_size):
    "[(B F), h*w, D] tokens -> [(B h/n w/n), F*n*n, D]: one sequence per n x n block, frame-major."
    check_grid(height, width, block_size)
    return rearrange(x, '(b f) (h n w m) c -> (b h w) (f n m) c', f=frames, h=height // block_size, n=block_size, m=block_size)

def sequences_to_grid(x, frames, height, width, block_size):
    "Inverse of `grid_to_sequences`."
    return rearrange(x, '(b h w) (f n m) c -> (b f) (h n w m) c', f=frames, h=height // block_size, w=width // block_size, n=block_size, m=block_size)

# %% ../nbs/02_motion_module.ipynb #9aa19b06
class TemporalAttention(Attention):
    "Self-attention along time over grid sequences of `block_size` x `block_size` tokens."
    def __init__(self, dim, heads=8, dim_head=None, position_encoding=True, max_len=4096, block_size=1, chunk_size=512, **kwargs):
        super().__init__(dim, heads=heads, dim_head=dim_head or dim // heads, chunk_size=chunk_size, **kwargs)
        self.block_size = block_size
        self.pos_encoder = PositionalEncoding(dim, max_len) if position_encoding else None

    def add_positions(self, x, frames):
        "x [(B F), h*w, D]: add each frame's position along every token's time line."
        if self.pos_encoder is None: return x
        time_lines = rearrange(x, '(b f) d c -> (b d) f c', f=frames)
        return rearrange(self.pos_encoder(time_lines), '(b d) f c -> (b f) d c', d=x.shape[1])

    def forward(self, x, frames, height, width):
        seqs = grid_to_sequences(self.add_positions(x, frames), frames, height, width, self.block_size)
        return sequences_to_grid(super().forward(seqs), frames, height, width, self.block_size)

# %% ../nbs/02_motion_module.ipynb #1f1f1804
class TemporalBlock(nn.Module):
    "Temporal self-attention layers and a GEGLU feed-forward, each pre-normed with a residual."
    def __init__(self, dim, heads, attention_block_types=('Temporal_Self', 'Temporal_Self'), **attn_kwargs):
        super().__init__()
        self.attention_blocks = nn.ModuleList([TemporalAttention(dim, heads, **attn_kwargs) for _ in attention_block_types])
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in attention_block_types])
        self.ff = FeedForward(dim, activation_fn='geglu')
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x, frames, height, width):
        for attn, norm in zip(self.attention_blocks, self.norms): x = attn(norm(x), frames, height, width) + x
        return self.ff(self.ff_norm(x)) + x

# %% ../nbs/02_motion_module.ipynb #4a9eb689
class TemporalTransformer(nn.Module):
    "GroupNorm, `proj_in`, temporal blocks, zero-initialised `proj_out`, plus the input: [B, D, F, h, w] -> same."
    def __init__(self, dim, heads=8, num_layers=1, norm_num_groups=32, zero_initialize=True, **block_kwargs):
        super().__init__()
        if dim % norm_num_groups: raise EasyAnimateError(f"the motion module's GroupNorm needs a width divisible by {norm_num_groups}, got {dim}")
        self.norm = nn.GroupNorm(norm_num_groups, dim, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(dim, dim)
        self.transformer_blocks = nn.ModuleList([TemporalBlock(dim, heads, **block_kwargs) for _ in range(num_layers)])
        self.proj_out = nn.Linear(dim, dim)
        if zero_initialize: nn.init.zeros_(self.proj_out.weight), nn.init.zeros_(self.proj_out.bias)

    def forward(self, video):
        b, c, frames, height, width = video.shape
        residual = rearrange(video, 'b c f h w -> (b f) c h w')
        x = rearrange(self.norm(residual), 'bf c h w -> bf (h w) c')
        x = self.proj_in(x)
        for block in self.transformer_blocks: x = block(x, frames, height, width)
        x = rearrange(self.proj_out(x), 'bf (h w) c -> bf c h w', h=height)
        return rearrange(x + residual, '(b f) c h w -> b c f h w', b=b)

# %% ../nbs/02_motion_module.ipynb #a8f70284
V1_MOTION_MODULE_KWARGS = dict(num_attention_heads=8, num_transformer_block=1, attention_block_types=['Temporal_Self', 'Temporal_Self'],
                               temporal_position_encoding=True, temporal_position_encoding_max_len=4096,
                               temporal_attention_dim_div=1, block_size=2)
MOTION_MODULE_TYPES = ('Vanilla', 'VanillaGrid')

class MotionModule(nn.Module):
    "v1's temporal module: a `TemporalTransformer` under the key `temporal_transformer`."
    def __init__(self, dim, num_attention_heads=8, num_transformer_block=1, attention_block_types=('Temporal_Self', 'Temporal_Self'),
                 temporal_position_encoding=True, temporal_position_encoding_max_len=4096, temporal_attention_dim_div=1,
                 block_size=1, zero_initialize=True, cross_frame_attention_mode=None):
        super().__init__()
        bad = [t for t in attention_block_types if t != 'Temporal_Self']
        if bad: raise EasyAnimateError(f"unsupported motion-module attention block types {bad}: only 'Temporal_Self' is implemented")
        if cross_frame_attention_mode is not None: raise EasyAnimateError("cross_frame_attention_mode is not supported by the v1 motion module; use None")
        if dim % (num_attention_heads * temporal_attention_dim_div):
            raise EasyAnimateError(f"motion-module width {dim} is not divisible by {num_attention_heads} heads x temporal_attention_dim_div {temporal_attention_dim_div}")
        self.temporal_transformer = TemporalTransformer(
            dim, num_attention_heads, num_transformer_block, zero_initialize=zero_initialize,
            attention_block_types=attention_block_types, dim_head=dim // num_attention_heads // temporal_attention_dim_div,
            position_encoding=temporal_position_encoding, max_len=temporal_position_encoding_max_len, block_size=block_size)

    def forward(self, video): return self.temporal_transformer(video)

def get_motion_module(dim, motion_module_type='VanillaGrid', motion_module_kwargs=None):
    "Build the motion module named by the v1 config (`Vanilla` or `VanillaGrid`) for width `dim`."
    kwargs = dict(motion_module_kwargs or {})
    if motion_module_type not in MOTION_MODULE_TYPES:
        raise EasyAnimateError(f"unknown motion_module_type {motion_module_type!r}: use one of {', '.join(MOTION_MODULE_TYPES)}")
    allowed = set(MotionModule.__init__.__code__.co_varnames[2:MotionModule.__init__.__code__.co_argcount])
    unknown = sorted(set(kwargs) - allowed)
    if unknown: raise EasyAnimateError(f"unknown motion_module_kwargs {unknown}: allowed are {sorted(allowed)}")
    if motion_module_type == 'Vanilla': kwargs['block_size'] = 1
    return MotionModule(dim, **kwargs)
