"""The Python API end to end on tiny pipelines built offline: the v1 release layout (PixArt folder + motion module +
personalized DiT + LoRA), every sampler, seeds, prompt batches, LoRA merge/unmerge, save/load round trip, saving files."""
import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import json
import pytest
import torch

from easyanimate.pipeline import EasyAnimateV1Pipeline, load_pipeline
from easyanimate.samplers import get_scheduler, min_steps, sampler_names
from easyanimate.tiny import save_v1_release, tiny_pipeline
from easyanimate.utils import EasyAnimateError
from easyanimate.video_io import save_video, video_info

KW = dict(video_length=4, height=32, width=32, num_inference_steps=2)


@pytest.fixture(scope='module')
def release(tmp_path_factory):
    return save_v1_release(tmp_path_factory.mktemp('release'))


@pytest.fixture(scope='module')
def pipe():
    p = tiny_pipeline(seed=0)
    p.set_progress_bar_config(disable=True)
    return p


def test_v1_layout_loads_and_generates(release, tmp_path):
    pipe = load_pipeline(release['model'], motion_module=release['motion_module'], transformer_checkpoint=release['personalized'],
                         lora=release['lora'], lora_weight=0.55, device='cpu')
    pipe.set_progress_bar_config(disable=True)
    video = pipe('a red circle moving left', seed=42, **KW).videos
    assert video.shape == (1, 3, 4, 32, 32) and torch.isfinite(video).all()
    path = save_video(video[0], tmp_path / 'v.mp4', fps=12)
    assert video_info(path)['frames'] == 4


@pytest.mark.parametrize('name', sampler_names())
def test_every_sampler_is_finite_and_reproducible(pipe, name):
    pipe.scheduler = get_scheduler(name)
    kw = {**KW, 'num_inference_steps': max(2, min_steps(pipe.scheduler)), 'output_type': 'latent'}
    a, b = pipe('a blue square', seed=5, **kw).videos, pipe('a blue square', seed=5, **kw).videos
    assert torch.isfinite(a).all() and torch.equal(a, b)
    assert torch.isfinite(pipe.decode_latents(a)).all()


def test_prompt_batch_matches_single_prompts(pipe):
    pipe.scheduler = get_scheduler('DDIM')   # deterministic: the batch's noise is the singles' noise, drawn in order
    g = torch.Generator().manual_seed(3)
    batch = pipe(['a red circle', 'a blue square'], generator=g, **KW).videos
    g = torch.Generator().manual_seed(3)
    noise = torch.randn((2, 4, 4, 4, 4), generator=g)
    single = pipe('a blue square', latents=noise[1:], **KW).videos
    assert batch.shape == (2, 3, 4, 32, 32)
    torch.testing.assert_close(batch[1:], single, atol=1e-5, rtol=0)


def test_lora_merge_unmerge_round_trip(release):
    pipe = EasyAnimateV1Pipeline.from_pretrained(release['model'])
    before = {k: v.clone() for k, v in [*pipe.transformer.state_dict().items(), *pipe.text_encoder.state_dict().items()]}
    pipe.merge_lora(release['lora'], 0.55)
    changed = [k for k, v in pipe.transformer.state_dict().items() if not torch.equal(v, before[k])]
    assert any('attn_temporal' in k for k in changed) and any('attn1.to_q' in k for k in changed)
    pipe.unmerge_lora()
    after = {**pipe.transformer.state_dict(), **pipe.text_encoder.state_dict()}
    assert max((after[k] - v).abs().max().item() for k, v in before.items()) <= 1e-6


def test_save_and_load_round_trip(pipe, tmp_path):
    pipe.scheduler = get_scheduler('Euler A')
    pipe.save_pretrained(tmp_path / 'saved')
    assert json.loads((tmp_path / 'saved' / 'model_index.json').read_text())['transformer'] == ['easyanimate.transformer', 'Transformer3DModel']
    back = EasyAnimateV1Pipeline.from_pretrained(tmp_path / 'saved')
    back.set_progress_bar_config(disable=True)
    torch.testing.assert_close(back('a red circle', seed=1, **KW).videos, pipe('a red circle', seed=1, **KW).videos, atol=1e-6, rtol=0)


def test_bad_requests_fail_before_work(pipe):
    for bad in [dict(height=40), dict(video_length=0), dict(num_inference_steps=0)]:
        with pytest.raises(EasyAnimateError): pipe('a red circle', **{**KW, **bad})


def test_no_class_borrows_a_diffusers_name():
    # diffusers resolves class names from its own namespace (a pipeline's `_class_name`, a processor's name in a
    # traceback): a class of ours named like one of diffusers' that it is not would be found, or read, as theirs
    import importlib, inspect, pkgutil
    import diffusers, easyanimate
    from diffusers.models import attention, attention_processor
    theirs = {n: getattr(m, n) for m in (diffusers, attention, attention_processor) for n in dir(m) if n[:1].isupper()}
    ours = {n: c for info in pkgutil.iter_modules(easyanimate.__path__) if not info.name.startswith('_')
            for n, c in vars(importlib.import_module(f'easyanimate.{info.name}')).items()
            if inspect.isclass(c) and c.__module__.startswith('easyanimate')}
    clashes = [n for n, c in ours.items() if n in theirs and not (inspect.isclass(theirs[n]) and issubclass(c, theirs[n]))]
    assert clashes == [], clashes
    assert 'EasyAnimatePipeline' in theirs and 'EasyAnimateV1Pipeline' in ours   # the clash that motivated the rename
