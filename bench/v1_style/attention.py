"""Multi-head self- and cross-attention on `scaled_dot_product_attention`, with the T5 padding mask as an additive bias, optional upcasting and a switchable naive path."""

# Frozen copy of easyanimate/attention.py at commit ab06025 (before the speed work), exported from ../nbs/01_attention.ipynb.

# %% ../nbs/01_attention.ipynb #e2a885f9
from __future__ import annotations
import contextlib
import torch
import torch.nn.functional as F
from torch import nn
from easyanimate.utils import EasyAnimateError

# %% auto #0
__all__ = ['ATTENTION_BACKENDS', 'naive_attention', 'check_backend', 'get_attention_backend', 'set_attention_backend',
           'attention_backend', 'attend', 'mask_to_bias', 'Attention']

# %% ../nbs/01_attention.ipynb #89744687
def naive_attention(q, k, v, bias=None, scale=None):
    "`softmax(q k^T * scale + bias) v` written out; `q`, `k`, `v` are [..., tokens, head_dim]."
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale
    if bias is not None: scores = scores + bias
    return scores.softmax(-1) @ v

# %% ../nbs/01_attention.ipynb #e85e55c0
ATTENTION_BACKENDS = ('sdpa', 'naive')
_default_backend = 'sdpa'

def check_backend(name):
    if name not in ATTENTION_BACKENDS:
        raise EasyAnimateError(f"unknown attention backend {name!r}: use one of {', '.join(ATTENTION_BACKENDS)}")
    return name

def get_attention_backend():
    "The attention kernel used by layers that do not set their own."
    return _default_backend

def set_attention_backend(name):
    "Set the process-wide default attention kernel: 'sdpa' or 'naive'."
    global _default_backend
    _default_backend = check_backend(name)

@contextlib.contextmanager
def attention_backend(name):
    "Use attention kernel `name` inside a `with` block."
    old = get_attention_backend()
    set_attention_backend(name)
    try: yield
    finally: set_attention_backend(old)

# %% ../nbs/01_attention.ipynb #1b5f7d86
def attend(q, k, v, bias=None, scale=None, backend=None, upcast=False):
    "Multi-head attention of [B, heads, N, d] tensors with an optional additive `bias`."
    dtype = q.dtype
    if upcast: q, k, v = q.float(), k.float(), v.float()
    if bias is not None: bias = bias.to(q.dtype)
    if check_backend(backend or get_attention_backend()) == 'sdpa':
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
    else: out = naive_attention(q, k, v, bias, scale)
    return out.to(dtype)

# %% ../nbs/01_attention.ipynb #2450301d
def mask_to_bias(mask, dtype=torch.float32):
    "Turn a [B, L] keep(1)/pad(0) mask into the additive bias [B, 1, L] used by v1 (0 keep, -10000 pad)."
    if mask.ndim != 2: raise EasyAnimateError(f"attention mask must be [batch, tokens] with 1 = keep, 0 = padding; got shape {tuple(mask.shape)}")
    return ((1 - mask.to(dtype)) * -10000.0).unsqueeze(1)

# %% ../nbs/01_attention.ipynb #34363c21
class Attention(nn.Module):
    "Multi-head attention with diffusers/v1 parameter names (`to_q`, `to_k`, `to_v`, `to_out.0`)."
    def __init__(self, query_dim, heads=8, dim_head=64, cross_attention_dim=None, bias=False, out_bias=True,
                 dropout=0.0, upcast=False, chunk_size=None, backend=None):
        super().__init__()
        inner, kv_dim = heads * dim_head, cross_attention_dim or query_dim
        self.heads, self.scale, self.upcast, self.chunk_size = heads, dim_head ** -0.5, upcast, chunk_size
        self.backend = backend
        self.to_q = nn.Linear(query_dim, inner, bias=bias)
        self.to_k = nn.Linear(kv_dim, inner, bias=bias)
        self.to_v = nn.Linear(kv_dim, inner, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim, bias=out_bias), nn.Dropout(dropout)])

    def split_heads(self, x): return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)
    def merge_heads(self, x): return x.transpose(1, 2).flatten(2)

    def attend(self, x, context, bias):
        q, k, v = map(self.split_heads, (self.to_q(x), self.to_k(context), self.to_v(context)))
        out = attend(q, k, v, bias, self.scale, self.backend, self.upcast)
        return self.to_out[1](self.to_out[0](self.merge_heads(out)))

    def forward(self, x, context=None, bias=None):
        "Attend from `x` [B, N, D] to `context` [B, L, D'] (default `x`); `bias` [B, 1, L] is added to the scores."
        context = x if context is None else context
        if bias is not None and bias.ndim == 3: bias = bias.unsqueeze(1)  # [B, 1, L] -> [B, heads=1, 1, L]
        n, size = x.shape[0], self.chunk_size or x.shape[0]
        if n <= size: return self.attend(x, context, bias)
        chunk_bias = lambda i: bias[i:i + size] if bias is not None and bias.shape[0] == n else bias
        return torch.cat([self.attend(x[i:i + size], context[i:i + size], chunk_bias(i)) for i in range(0, n, size)])
