"""Image-to-video, inpainting, video-to-video and long videos end to end: an inpaint model folder made by widening a
text-to-video one, the `easyanimate generate` flags of every mode (one subprocess, the rest in-process), and bad requests
(one line, exit status 2, nothing written)."""
import os, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch

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
def test_every_mode_writes_its_video(folders, tmp_path, capsys, extra, frames):
    extra = [folders / a if a.endswith(('.png', '.mp4')) else a for a in extra]
    r = run(capsys, 'generate', 'a red circle', '--model', folders / 'inpaint', *TINY, '--out', tmp_path / 'v.mp4', *extra)
    assert r.returncode == 0, r.stderr
    assert read_video(r.stdout.strip()).shape == (frames, 32, 32, 3)


BAD = [(['--mask', 'mask.png'], '--mask needs --video'), (['--end-image', 'end.png'], '--end-image needs --image'),
       (['--video', 'in.mp4', '--mask', 'mask5.mp4'], 'has 5 frames but --video'), (['--video', 'in.mp4', '--strength', '0'], 'strength must be in (0, 1]'),
       (['--image', 'nothing.png'], 'no such file'), (['--model', 't2v', '--image', 'start.png'], 'needs an inpaint model'),
       (['--model', 't2v', '--frames', '9', '--segment-frames', '6'], 'needs an inpaint model')]


@pytest.mark.parametrize('extra, message', BAD)
def test_bad_requests_get_one_line_and_status_2_and_write_nothing(folders, tmp_path, capsys, extra, message):
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
