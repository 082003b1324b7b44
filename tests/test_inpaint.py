"""Image-to-video, inpainting, video-to-video and long videos end to end: an inpaint model folder made by widening a
text-to-video one, the `easyanimate generate` flags of every mode (one subprocess, the rest in-process), and bad requests
(one line, exit status 2, nothing written)."""
import os, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch

from PIL import Image

from easyanimate import cli, inpaint
from easyanimate.cli import main
from easyanimate.inpaint import tiny_image_encoder, widen_pipeline
from easyanimate.pipeline import EasyAnimateV1Pipeline
from easyanimate.shapes import ClipSpec, render_clip
from easyanimate.tiny import tiny_pipeline
from easyanimate.video_io import read_video, save_video

ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'OMP_NUM_THREADS': '1', 'TOKENIZERS_PARALLELISM': 'false'}
TINY = ['--size', '32x32', '--steps', '2', '--quiet']


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
    "A text-to-video folder, its inpaint copy (widened transformer + tiny CLIP image encoder) and input files."
    root = tmp_path_factory.mktemp('inpaint')
    t2v = tiny_pipeline(seed=3)
    t2v.save_pretrained(root / 't2v')
    widen_pipeline(EasyAnimateV1Pipeline.from_pretrained(root / 't2v'), *tiny_image_encoder(seed=3)).save_pretrained(root / 'inpaint')
    clip = render_clip(ClipSpec('red', 'circle', 'right'), n_frames=8, size=64)
    mask = np.zeros((64, 64, 3), np.uint8); mask[16:48, 16:48] = 255
    for name, frames in (('start.png', clip[0]), ('end.png', clip[-1]), ('in.mp4', clip), ('mask.png', mask), ('mask5.mp4', np.repeat(mask[None], 5, 0))):
        save_video(frames, root / name)
    return root


def test_a_widened_folder_makes_the_text_to_video_folders_video(folders):
    kw = dict(video_length=4, height=32, width=32, num_inference_steps=2, seed=5, output_type='np')
    pipes = [EasyAnimateV1Pipeline.from_pretrained(folders / name) for name in ('t2v', 'inpaint')]
    for p in pipes: p.set_progress_bar_config(disable=True)
    assert pipes[1].transformer.config.in_channels == 12 and pipes[1].image_encoder is not None
    np.testing.assert_array_equal(pipes[0]('a red circle', **kw).videos, pipes[1]('a red circle', **kw).videos)


def test_image_to_video_from_the_console_command(folders, tmp_path):
    out = tmp_path / 'i2v.mp4'
    r = subprocess.run([sys.executable, '-m', 'easyanimate.cli', 'generate', 'a red circle', '--model', folders / 'inpaint', *TINY, '--frames', '5',
                        '--image', folders / 'start.png', '--end-image', folders / 'end.png', '--out', out], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out) and read_video(out).shape == (5, 32, 32, 3)


@pytest.mark.parametrize('extra, frames', [(['--video', 'in.mp4', '--mask', 'mask.png'], 8), (['--video', 'in.mp4', '--strength', '0.5'], 8),
                                           (['--frames', '11', '--segment-frames', '5', '--overlap', '2', '--image', 'start.png'], 11)])
def test_every_mode_writes_its_video(folders, tmp_path, capsys, monkeypatch, extra, frames):
    """Each mode writes its video and conditions the model on what it was given: the tiny random model's frames cannot show that, so it
    is checked where it holds by construction, in the pixels and mask that are encoded and in the latents the transformer then gets."""
    encoded, given, encode, predict, encode_video = [], [], inpaint.inpaint_latents, EasyAnimateV1Pipeline.predict_noise, inpaint.encode_video
    def spy(vae, video, mask, *a, **k):
        encoded.append((video.clone(), mask.clone(), encode(vae, video, mask, *a, **k)))
        return encoded[-1][2]
    clips = []   # every clip the VAE encodes
    def spy_clip(vae, video, *a, **k):
        clips.append(video.clone())
        return encode_video(vae, video, *a, **k)
    def predict_noise(self, *a, **model_kwargs):
        given.append(model_kwargs['inpaint_latents'])
        return predict(self, *a, **model_kwargs)
    monkeypatch.setattr(inpaint, 'inpaint_latents', spy)
    monkeypatch.setattr(inpaint, 'encode_video', spy_clip)
    monkeypatch.setattr(EasyAnimateV1Pipeline, 'predict_noise', predict_noise)
    extra = [folders / a if a.endswith(('.png', '.mp4')) else a for a in extra]
    r = run(capsys, 'generate', 'a red circle', '--model', folders / 'inpaint', *TINY, '--out', tmp_path / 'v.mp4', *extra)
    assert r.returncode == 0, r.stderr
    assert read_video(r.stdout.strip()).shape == (frames, 32, 32, 3)
    small = lambda path: np.stack([np.asarray(Image.fromarray(f).resize((32, 32), Image.BICUBIC)) for f in read_video(path)]) / 127.5 - 1
    pixels = lambda video: video[0].permute(1, 2, 3, 0).numpy()   # [1, 3, F, H, W] -> [F, H, W, 3]
    if '--strength' in extra:   # video-to-video: all generated, so zero inpaint latents; the one clip encoded, to start from, is the video
        assert not encoded and len(clips) == 1 and all(g.eq(0).all() for g in given)
        np.testing.assert_allclose(pixels(clips[0]), small(folders / 'in.mp4'), atol=1e-5)
        return
    video, mask, _ = encoded[0]
    if '--image' in extra:   # frame 0 is the start image and kept; each later segment keeps the 2 overlap frames it starts from
        np.testing.assert_allclose(pixels(video)[0], small(folders / 'start.png')[0], atol=1e-5)
        assert len(encoded) == 3 and all(m[0, 0, :k].eq(0).all() and m[0, 0, k:].eq(1).all() for k, (_, m, _) in zip((1, 2, 2), encoded))
    else:   # the white square (rows and columns 8..23 at 32 px) is generated, the rest of the video kept as it was
        inside = torch.zeros(32, 32, dtype=torch.bool); inside[8:24, 8:24] = True
        assert mask[0, 0, :, inside].eq(1).all() and mask[0, 0, :, ~inside].eq(0).all()
        np.testing.assert_allclose(pixels(video)[:, ~inside.numpy()], small(folders / 'in.mp4')[:, ~inside.numpy()], atol=1e-5)
    assert all(any(torch.equal(g[-1], latents[-1]) for g in given) for _, _, latents in encoded)   # what was encoded reached the transformer


BAD = [(['--mask', 'mask.png'], '--mask needs --video'), (['--end-image', 'end.png'], '--end-image needs --image'),
       (['--video', 'in.mp4', '--mask', 'mask5.mp4'], 'has 5 frames but --video'), (['--video', 'in.mp4', '--strength', '0'], 'strength must be in (0, 1]'),
       (['--image', 'nothing.png'], 'no such file'), (['--model', 't2v', '--image', 'start.png'], 'needs an inpaint model'),
       (['--model', 't2v', '--frames', '9', '--segment-frames', '6'], '--segment-frames needs an inpaint model'),
       (['--frames', '13', '--segment-frames', '12', '--image', 'start.png', '--end-image', 'end.png'], 'the last of the segments [12, 5] (5 frames) leaves no frame'),
       (['--video', 'in.mp4', '--strength', '1'], 'at strength 1 nothing of it would be kept'),
       (['--video', 'in.mp4', '--strength', '0.2'], 'strength 0.2 with 2 steps leaves no denoising step')]


@pytest.mark.parametrize('extra, message', BAD)
def test_bad_requests_get_one_line_and_status_2_and_write_nothing(folders, tmp_path, capsys, monkeypatch, extra, message):
    "Refused before any model loads: loading one fails the test."
    monkeypatch.setattr(cli, 'load_for_plan', lambda *a: pytest.fail('a model was loaded for a request that is refused up front'))
    (tmp_path / 'old.mp4').write_bytes(b'kept')
    extra = [folders / a if a.endswith(('.png', '.mp4')) or a == 't2v' else a for a in extra]
    model = [] if '--model' in extra else ['--model', folders / 'inpaint']
    r = run(capsys, 'generate', 'a red circle', *model, *TINY, '--out', tmp_path / 'old.mp4', '--overwrite', *extra)
    assert r.returncode == 2 and message in r.stderr and r.stderr.count('\n') == 1, r.stderr
    assert (tmp_path / 'old.mp4').read_bytes() == b'kept' and sorted(p.name for p in tmp_path.iterdir()) == ['old.mp4']


def test_info_says_a_folder_is_an_inpaint_model(folders, capsys):
    r = run(capsys, 'info', folders / 'inpaint')
    assert r.returncode == 0 and 'inpaint model (12 input channels, CLIP image tokens, image_encoder/)' in r.stdout
    r = run(capsys, 'info', folders / 't2v')
    assert r.returncode == 0 and 'inpaint model' not in r.stdout


def test_model_cpu_offload_chains_the_image_encoder(folders, monkeypatch):
    """diffusers' enable_model_cpu_offload hooks the components of model_cpu_offload_seq in one chain (each moves to the GPU as the one
    before leaves): the CLIP image encoder is in it, and a folder without one is fine. No GPU here: the hooks are recorded, not placed."""
    import accelerate
    from diffusers import DiffusionPipeline
    for folder, want in (('inpaint', ['text_encoder', 'image_encoder', 'transformer', 'vae']), ('t2v', ['text_encoder', 'transformer', 'vae'])):
        pipe, calls = EasyAnimateV1Pipeline.from_pretrained(folders / folder), []
        def hook(model, device, prev_module_hook=None):
            calls.append((model, prev_module_hook, object()))
            return model, calls[-1][2]
        monkeypatch.setattr(accelerate, 'cpu_offload_with_hook', hook)
        DiffusionPipeline.enable_model_cpu_offload(pipe, device='cuda')
        names = {id(v): k for k, v in pipe.components.items() if v is not None}
        assert [names[id(m)] for m, _, _ in calls] == want
        assert all(prev is calls[i - 1][2] for i, (_, prev, _) in enumerate(calls) if i)   # one chain, nothing hooked on its own
