"""The PixArt-alpha diffusion transformer of EasyAnimate v1, made a video model by frames-in-the-batch patch embedding, per-frame spatial attention and a motion module in every block; loads PixArt weights, motion-module files and personalized checkpoints."""

# Frozen copy of easyanimate/transformer.py at commit ab06025 (before the speed work), exported from ../nbs/03_transformer.ipynb.

# %% ../nbs/03_transformer.ipynb #4917f8f9
from __future__ import annotations
import json, logging, inspect
from pathlib import Path
import torch
from torch import nn
from einops import rearrange
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.embeddings import PatchEmbed, PixArtAlphaTextProjection
from diffusers.models.normalization import AdaLayerNormSingle
from diffusers.models.attention import FeedForward
from easyanimate.utils import EasyAnimateError, load_state_dict, key_report, KeyReport
from .attention import Attention, mask_to_bias, check_backend
from .motion_module import get_motion_module, PositionalEncoding, V1_MOTION_MODULE_KWARGS

_logger = logging.getLogger(__name__)

# %% auto #0
__all__ = ['V1_ADDITIONAL_KWARGS', 'V1_LONG_SEQUENCE_KWARGS', 'PIXART_XL_2_512_CONFIG', 'BLOCK_TYPES', 'POSITION_TABLES',
           'WEIGHT_NAMES', 'PIXART_CLASS_NAMES', 'VideoTransformerBlock', 'check_supported', 'check_inputs',
           'patch_tokens', 'add_time_positions', 'run_blocks', 'final_layer', 'unpatchify', 'Transformer3DModel',
           'is_position_table', 'is_motion_module_key', 'other_length_tables', 'checked_load', 'as_state_dict',
           'load_motion_module', 'load_transformer_checkpoint', 'read_2d_config', 'read_diffusers_weights',
           'from_pretrained_2d']

# %% ../nbs/03_transformer.ipynb #814a4968
V1_ADDITIONAL_KWARGS = dict(basic_block_type='motionmodule', motion_module_type='VanillaGrid', motion_module_kwargs=V1_MOTION_MODULE_KWARGS,
                            time_position_encoding_before_transformer=False, patch_3d=False, fake_3d=False)
V1_LONG_SEQUENCE_KWARGS = dict(basic_block_type='selfattentiontemporal', time_position_encoding_before_transformer=True,
                               patch_3d=False, fake_3d=False)
PIXART_XL_2_512_CONFIG = dict(num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28, patch_size=2,
                              sample_size=64, caption_channels=4096, cross_attention_dim=1152, norm_type='ada_norm_single',
                              norm_elementwise_affine=False, norm_eps=1e-6, activation_fn='gelu-approximate', attention_bias=True,
                              num_embeds_ada_norm=1000)
BLOCK_TYPES = ('motionmodule', 'selfattentiontemporal')

# %% ../nbs/03_transformer.ipynb #0ff30227
class VideoTransformerBlock(nn.Module):
    "A PixArt block (AdaLN-single) over the tokens of a clip, with v1's motion module after the self-attention."
    def __init__(self, dim, heads, head_dim, cross_attention_dim=None, activation_fn='gelu-approximate', attention_bias=True,
                 norm_elementwise_affine=False, norm_eps=1e-6, upcast_attention=False, dropout=0.0,
                 block_type='motionmodule', motion_module_type='VanillaGrid', motion_module_kwargs=None):
        super().__init__()
        self.per_frame = block_type == 'motionmodule'
        attn = dict(heads=heads, dim_head=head_dim, bias=attention_bias, dropout=dropout, upcast=upcast_attention)
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=norm_elementwise_affine, eps=norm_eps)
        self.attn1 = Attention(dim, **attn)
        self.attn_temporal = get_motion_module(dim, motion_module_type, motion_module_kwargs) if self.per_frame else None
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=norm_elementwise_affine, eps=norm_eps)
        self.attn2 = Attention(dim, cross_attention_dim=cross_attention_dim, **attn) if cross_attention_dim is not None else None
        self.ff = FeedForward(dim, dropout=dropout, activation_fn=activation_fn)
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim ** 0.5)

    def self_attention(self, x, frames):
        if not self.per_frame: return self.attn1(x)
        return rearrange(self.attn1(rearrange(x, 'b (f d) c -> (b f) d c', f=frames)), '(b f) d c -> b (f d) c', f=frames)

    def motion(self, x, frames, height, width):
        video = rearrange(x, 'b (f h w) c -> b c f h w', f=frames, h=height, w=width)
        return rearrange(self.attn_temporal(video), 'b c f h w -> b (f h w) c')

    def forward(self, x, context, context_bias, timestep, frames, height, width):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.scale_shift_table[None] + timestep.reshape(x.shape[0], 6, -1)).chunk(6, dim=1)
        x = gate_msa * self.self_attention(self.norm1(x) * (1 + scale_msa) + shift_msa, frames) + x
        if self.attn_temporal is not None: x = self.motion(x, frames, height, width)
        if self.attn2 is not None: x = self.attn2(x, context, context_bias) + x
        return gate_mlp * self.ff(self.norm2(x) * (1 + scale_mlp) + shift_mlp) + x

# %% ../nbs/03_transformer.ipynb #4d68e031
def check_supported(norm_type, num_embeds_ada_norm, in_channels, patch_size, basic_block_type, patch_3d, fake_3d,
                    attention_type, num_vector_embeds, only_cross_attention, double_self_attention, caption_channels, cross_attention_dim, inner_dim):
    problems = []
    if norm_type != 'ada_norm_single': problems.append(f"norm_type {norm_type!r} (only 'ada_norm_single', PixArt's)")
    if num_embeds_ada_norm is None: problems.append("num_embeds_ada_norm None (PixArt uses 1000)")
    if in_channels is None or patch_size is None: problems.append("in_channels/patch_size None (the model works on patched latents)")
    if basic_block_type not in BLOCK_TYPES: problems.append(f"basic_block_type {basic_block_type!r} (use one of {', '.join(BLOCK_TYPES)})")
    if patch_3d or fake_3d: problems.append("patch_3d/fake_3d (not part of the v1 release; use False)")
    if attention_type != 'default': problems.append(f"attention_type {attention_type!r} (only 'default')")
    if num_vector_embeds is not None: problems.append("num_vector_embeds (discrete inputs are not supported)")
    if only_cross_attention or double_self_attention: problems.append("only_cross_attention/double_self_attention (PixArt uses neither)")
    if caption_channels is not None and cross_attention_dim not in (None, inner_dim):
        problems.append(f"cross_attention_dim {cross_attention_dim} with a caption projection to the model width {inner_dim} (they must be equal)")
    if problems: raise EasyAnimateError("unsupported Transformer3DModel configuration: " + '; '.join(problems))

# %% ../nbs/03_transformer.ipynb #f5994030
def check_inputs(model, x, context, mask, timestep):
    cfg = model.config
    if x.ndim != 5: raise EasyAnimateError(f"hidden_states must be video latents [batch, channels, frames, height, width]; got shape {tuple(x.shape)}")
    b, c, f, hh, ww = x.shape
    if c != cfg.in_channels: raise EasyAnimateError(f"hidden_states have {c} channels; this transformer takes {cfg.in_channels}")
    if hh % cfg.patch_size or ww % cfg.patch_size:
        raise EasyAnimateError(f"latent size {hh}x{ww} is not divisible by the patch size {cfg.patch_size}")
    want = cfg.caption_channels or cfg.cross_attention_dim
    if context is None or context.ndim != 3 or context.shape[0] != b or context.shape[-1] != want:
        raise EasyAnimateError(f"encoder_hidden_states must be [{b}, tokens, {want}]; got {None if context is None else tuple(context.shape)}")
    if mask is not None and mask.ndim == 2 and tuple(mask.shape) != tuple(context.shape[:2]):
        raise EasyAnimateError(f"encoder_attention_mask must be [{b}, {context.shape[1]}] (1 keep, 0 padding); got {tuple(mask.shape)}")
    timestep = torch.as_tensor(timestep, device=x.device)
    if timestep.ndim == 0: timestep = timestep.expand(b)
    if timestep.shape != (b,): raise EasyAnimateError(f"timestep must be a number or a [{b}] tensor; got shape {tuple(timestep.shape)}")
    return timestep

# %% ../nbs/03_transformer.ipynb #f0ae9471
def patch_tokens(model, x):
    "[B, C, F, H, W] latents -> [(B F), h*w, D] patch tokens, every frame with the same 2D positions."
    return model.pos_embed(rearrange(x, 'b c f h w -> (b f) c h w'))

def add_time_positions(model, tokens, frames):
    "Long-sequence variant: add to every token the sinusoidal position of its frame."
    if model.t_pos is None: return tokens
    time_lines = rearrange(tokens, '(b f) d c -> (b d) f c', f=frames)
    return rearrange(model.t_pos(time_lines), '(b d) f c -> (b f) d c', d=tokens.shape[1])

def run_blocks(model, x, context, bias, timestep, frames, height, width):
    for block in model.transformer_blocks:
        if torch.is_grad_enabled() and model.gradient_checkpointing:
            x = model._gradient_checkpointing_func(block, x, context, bias, timestep, frames, height, width)
        else: x = block(x, context, bias, timestep, frames, height, width)
    return x

def final_layer(model, x, embedded_timestep):
    shift, scale = (model.scale_shift_table[None] + embedded_timestep[:, None]).chunk(2, dim=1)
    return model.proj_out(model.norm_out(x) * (1 + scale) + shift)

def unpatchify(model, x, frames, height, width):
    "[B, F*h*w, p*p*C] -> [B, C, F, h*p, w*p]."
    p, c = model.config.patch_size, model.out_channels
    x = torch.einsum('nfhwpqc->ncfhpwq', x.reshape(-1, frames, height, width, p, p, c))
    return x.reshape(-1, c, frames, height * p, width * p)

# %% ../nbs/03_transformer.ipynb #489d1219
class Transformer3DModel(ModelMixin, ConfigMixin):
    "EasyAnimate v1's video DiT: PixArt-alpha with per-frame patches and spatial attention plus a motion module per block."
    _supports_gradient_checkpointing = True
    _no_split_modules = ['VideoTransformerBlock', 'PatchEmbed']

    @register_to_config
    def __init__(self, num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28, dropout=0.0,
                 norm_num_groups=32, cross_attention_dim=1152, attention_bias=True, sample_size=64, patch_size=2,
                 activation_fn='gelu-approximate', num_embeds_ada_norm=1000, upcast_attention=False, norm_type='ada_norm_single',
                 norm_elementwise_affine=False, norm_eps=1e-6, interpolation_scale=None, use_additional_conditions=None,
                 caption_channels=4096, attention_type='default', num_vector_embeds=None, use_linear_projection=False,
                 only_cross_attention=False, double_self_attention=False,
                 basic_block_type='motionmodule', motion_module_type='VanillaGrid', motion_module_kwargs=None,
                 time_position_encoding_before_transformer=False, patch_3d=False, fake_3d=False):
        super().__init__()
        dim = num_attention_heads * attention_head_dim
        check_supported(norm_type, num_embeds_ada_norm, in_channels, patch_size, basic_block_type, patch_3d, fake_3d, attention_type,
                        num_vector_embeds, only_cross_attention, double_self_attention, caption_channels, cross_attention_dim, dim)
        self.inner_dim, self.out_channels = dim, in_channels if out_channels is None else out_channels
        self.use_additional_conditions = sample_size == 128 if use_additional_conditions is None else use_additional_conditions
        self.gradient_checkpointing = False
        self.pos_embed = PatchEmbed(height=sample_size, width=sample_size, patch_size=patch_size, in_channels=in_channels, embed_dim=dim,
                                    interpolation_scale=interpolation_scale or max(sample_size // 64, 1))
        mm_kwargs = V1_MOTION_MODULE_KWARGS if motion_module_kwargs is None else motion_module_kwargs
        self.transformer_blocks = nn.ModuleList([
            VideoTransformerBlock(dim, num_attention_heads, attention_head_dim, cross_attention_dim, activation_fn, attention_bias,
                                  norm_elementwise_affine, norm_eps, upcast_attention, dropout, basic_block_type, motion_module_type, mm_kwargs)
            for _ in range(num_layers)])
        self.norm_out = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.scale_shift_table = nn.Parameter(torch.randn(2, dim) / dim ** 0.5)
        self.proj_out = nn.Linear(dim, patch_size * patch_size * self.out_channels)
        self.adaln_single = AdaLayerNormSingle(dim, use_additional_conditions=self.use_additional_conditions)
        self.caption_projection = PixArtAlphaTextProjection(caption_channels, dim) if caption_channels is not None else None
        self.t_pos = PositionalEncoding(dim, 4096) if time_position_encoding_before_transformer else None

    def forward(self, hidden_states, encoder_hidden_states=None, timestep=None, added_cond_kwargs=None, encoder_attention_mask=None, return_dict=True):
        "Predict [B, out_channels, F, H, W] from latents [B, C, F, H, W], caption [B, L, caption_channels], its mask [B, L] and timesteps [B]."
        timestep = check_inputs(self, hidden_states, encoder_hidden_states, encoder_attention_mask, timestep)
        if self.use_additional_conditions and added_cond_kwargs is None:
            raise EasyAnimateError("this model (sample_size 128) needs added_cond_kwargs={'resolution': ..., 'aspect_ratio': ...}")
        bias = encoder_attention_mask
        if bias is not None and bias.ndim == 2: bias = mask_to_bias(bias, hidden_states.dtype)
        b, _, frames, hh, ww = hidden_states.shape
        height, width = hh // self.config.patch_size, ww // self.config.patch_size
        tokens = patch_tokens(self, hidden_states)
        timestep, embedded_timestep = self.adaln_single(timestep, added_cond_kwargs, batch_size=b, hidden_dtype=tokens.dtype)
        x = add_time_positions(self, tokens, frames).reshape(b, frames * height * width, -1)
        context = encoder_hidden_states
        if self.caption_projection is not None: context = self.caption_projection(context).view(b, -1, x.shape[-1])
        x = run_blocks(self, x, context, bias, timestep, frames, height, width)
        out = unpatchify(self, final_layer(self, x, embedded_timestep), frames, height, width)
        return Transformer2DModelOutput(sample=out) if return_dict else (out,)

    def set_attention_backend(self, backend):
        "Use attention kernel `backend` ('sdpa' or 'naive') in every attention layer; None follows the process-wide default."
        if backend is not None: check_backend(backend)
        for m in self.modules():
            if isinstance(m, Attention): m.backend = backend

    def reset_attention_backend(self): self.set_attention_backend(None)

# %% ../nbs/03_transformer.ipynb #5e87e4ec
POSITION_TABLES = ('pos_encoder.pe', 't_pos.pe')
WEIGHT_NAMES = ('diffusion_pytorch_model.safetensors', 'diffusion_pytorch_model.bin')
PIXART_CLASS_NAMES = ('Transformer2DModel', 'PixArtTransformer2DModel', 'Transformer3DModel')

def is_position_table(key): return key.endswith(POSITION_TABLES)
def is_motion_module_key(key): return '.attn_temporal.' in key

def other_length_tables(mismatched):
    "Position tables that differ only in their number of rows."
    return [k for k, ours, theirs in mismatched if is_position_table(k) and len(ours) == len(theirs) == 3
            and (ours[0], ours[2]) == (theirs[0], theirs[2])]

def checked_load(model, state_dict, allowed, optional, source):
    "Load `state_dict` into `model` if every tensor is one of `allowed` with the right shape and no other key is missing."
    expected = {k: v for k, v in model.state_dict().items() if k in set(allowed)}
    report = key_report(expected, state_dict)
    skip = other_length_tables(report.mismatched)
    problems = KeyReport(missing=[k for k in report.missing if k not in optional], unexpected=report.unexpected,
                         mismatched=[m for m in report.mismatched if m[0] not in skip])
    if not problems.ok: raise EasyAnimateError(f"{source} does not fit this {type(model).__name__}: {problems.summary()}")
    if skip: _logger.warning(f"{source}: kept this model's own sinusoidal tables for {len(skip)} keys whose table has another length (e.g. {skip[0]})")
    model.load_state_dict({k: v for k, v in state_dict.items() if k not in skip}, strict=False)
    return KeyReport(missing=report.missing, unexpected=[], mismatched=[])

def as_state_dict(path_or_state_dict):
    if isinstance(path_or_state_dict, dict): return path_or_state_dict, 'the given state dict'
    return load_state_dict(path_or_state_dict), str(path_or_state_dict)

# %% ../nbs/03_transformer.ipynb #585f04e7
def load_motion_module(model, path_or_state_dict):
    "Load a v1 motion-module file (exactly the `*.attn_temporal.*` tensors) into `model`; returns the `KeyReport`."
    sd, source = as_state_dict(path_or_state_dict)
    mm_keys = [k for k in model.state_dict() if is_motion_module_key(k)]
    if not mm_keys: raise EasyAnimateError(f"this model has no motion module (basic_block_type {model.config.basic_block_type!r}); build it with basic_block_type='motionmodule'")
    foreign = [k for k in sd if not is_motion_module_key(k)]
    if foreign or not sd:
        raise EasyAnimateError(f"{source} is not a motion-module file: {len(foreign)} of {len(sd)} keys are outside `attn_temporal` (e.g. {', '.join(foreign[:3])}); "
                               "a full transformer checkpoint loads with load_transformer_checkpoint")
    return checked_load(model, sd, mm_keys, {k for k in mm_keys if is_position_table(k)}, source)

def load_transformer_checkpoint(model, path):
    "Load a full DiT checkpoint (e.g. a personalized v1 model), with or without motion-module tensors; returns the `KeyReport`."
    sd, source = as_state_dict(path)
    keys = list(model.state_dict())
    if sd and all(is_motion_module_key(k) for k in sd):
        raise EasyAnimateError(f"{source} holds only motion-module tensors (e.g. {next(iter(sd))}); load it with load_motion_module")
    has_mm = any(is_motion_module_key(k) for k in sd)
    optional = {k for k in keys if is_position_table(k) or (is_motion_module_key(k) and not has_mm)}
    return checked_load(model, sd, keys, optional, source)

# %% ../nbs/03_transformer.ipynb #6ee96404
def read_2d_config(folder):
    "The PixArt transformer config of a diffusers folder, without its `_`-prefixed bookkeeping entries."
    path = Path(folder) / 'config.json'
    if not path.is_file():
        hint = " (it has a transformer/ subfolder: pass subfolder='transformer')" if (Path(folder) / 'transformer' / 'config.json').is_file() else ''
        raise EasyAnimateError(f"no config.json in {folder}{hint}; expected a PixArt transformer folder in diffusers layout")
    config = json.loads(path.read_text())
    if config.get('_class_name', 'Transformer2DModel') not in PIXART_CLASS_NAMES:
        raise EasyAnimateError(f"{path} describes a {config['_class_name']}, not a PixArt transformer ({', '.join(PIXART_CLASS_NAMES)})")
    return {k: v for k, v in config.items() if not k.startswith('_')}

def read_diffusers_weights(folder):
    "All tensors of a diffusers model folder: one file or a sharded `.index.json`."
    folder = Path(folder)
    for name in WEIGHT_NAMES:
        if (folder / name).is_file(): return load_state_dict(folder / name)
        index = folder / f'{name}.index.json'
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())['weight_map'].values()))
            return {k: v for shard in shards for k, v in load_state_dict(folder / shard).items()}
    raise EasyAnimateError(f"no weights in {folder}: expected one of {', '.join(WEIGHT_NAMES)} (or a sharded .index.json)")

def from_pretrained_2d(cls, pretrained_model_path, subfolder=None, transformer_additional_kwargs=None, torch_dtype=None, return_report=False):
    "Build the video model from a PixArt transformer folder (diffusers layout) plus the v1 kwargs, and load every 2D tensor."
    folder = Path(pretrained_model_path) / (subfolder or '')
    kwargs = {**read_2d_config(folder), **(transformer_additional_kwargs or {})}
    params = inspect.signature(cls.__init__).parameters
    ignored = sorted(k for k in kwargs if k not in params)
    if ignored: _logger.info(f"{folder}/config.json: ignoring fields {ignored}")
    model = cls(**{k: v for k, v in kwargs.items() if k in params})
    keys = list(model.state_dict())
    report = checked_load(model, read_diffusers_weights(folder), keys, {k for k in keys if is_motion_module_key(k) or is_position_table(k)}, str(folder))
    mm_params = sum(p.numel() for n, p in model.named_parameters() if is_motion_module_key(n))
    _logger.info(f"loaded {folder}: {len(report.missing)} keys kept their initialisation, 0 unexpected; motion-module parameters: {mm_params / 1e6:.1f} M")
    if torch_dtype is not None: model = model.to(torch_dtype)
    return (model, report) if return_report else model

Transformer3DModel.from_pretrained_2d = classmethod(from_pretrained_2d)
