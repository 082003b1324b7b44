"""The same-run reference for "the original code's approach": easyanimate's transformer as it was before the speed work
(commit ab06025), frozen here unchanged except for its imports.

It computes the way EasyAnimate v1 does (and matched the original v1 output, `ref_A`, to 7e-7): separate q/k/v
projections, an einops rearrange with a copy at every layout change (frames into the batch, GroupNorm in channel-first
layout, the position add and the 2x2 grid regrouping inside each temporal attention layer, and back), and the same
`scaled_dot_product_attention` kernel. Its state dict is the package's, so both load the same weights.
"""
from .transformer import Transformer3DModel as ReferenceTransformer3DModel
from .attention import attention_backend as reference_attention_backend
