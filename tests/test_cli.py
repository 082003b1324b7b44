"""The `easyanimate` command in subprocesses, as a user runs it: generation with the tiny random fallback and with the
v1 release layout in miniature, `info`, and bad input (one line on stderr, exit status 2, nothing written, no traceback)."""
import os, shutil, subprocess, sys
from pathlib import Path
import numpy as np
import pytest

import easyanimate

from easyanimate.cli import DEMO_NOTICE, main
from easyanimate.tiny import save_v1_release
from easyanimate.video_io import read_video, video_info

ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'OMP_NUM_THREADS': '1', 'TOKENIZERS_PARALLELISM': 'false'}
SCRIPT = Path(sys.executable).parent / 'easyanimate'
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, '-m', 'easyanimate.cli']
TINY = ['--size', '32x32', '--frames', '4', '--steps', '2', '--quiet']


def cli(*args, cwd=None, env=ENV):
    "The real console command in a fresh process (slow to start: used where the process boundary matters)."
    if env is not ENV: command, cwd = [sys.executable, '-m', 'easyanimate.cli'], cwd or env['PYTHONPATH']   # -m looks in the cwd first
    else: command = COMMAND
    return subprocess.run(command + [str(a) for a in args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def run(capsys, *args):
    "`main` in this process: same code path, without the start-up cost."
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


@pytest.fixture(scope='module')
def release(tmp_path_factory):
    return save_v1_release(tmp_path_factory.mktemp('release'))


@pytest.fixture(scope='module')
def without_demo_model(tmp_path_factory):
    "A copy of the package without its package data, as an installation that lacks it: the environment to run it with."
    root = tmp_path_factory.mktemp('bare')
    shutil.copytree(Path(easyanimate.__file__).parent, root / 'easyanimate', ignore=shutil.ignore_patterns('demo_model', '__pycache__'))
    return {**ENV, 'PYTHONPATH': str(root)}


def test_generate_with_the_fallback_pipeline(without_demo_model, tmp_path):
    r = cli('generate', 'a red circle moving left', *TINY, '--out', tmp_path / 'out/', '--grid', cwd=tmp_path, env=without_demo_model)
    assert r.returncode == 0, r.stderr
    assert r.stderr == f'easyanimate: {DEMO_NOTICE}\n'   # said plainly, and nothing else
    video, grid = [Path(line) for line in r.stdout.split()]
    assert (video.name, grid.name) == ('00000001.mp4', '00000001_grid.png')
    assert video_info(video) == dict(frames=4, size=(32, 32), fps=12.0, codec='h264')
    again = cli('generate', 'a red circle moving left', *TINY, '--out', tmp_path / 'out/', env=without_demo_model)   # same seed (42): same video, next number
    assert Path(again.stdout.strip()).name == '00000002.mp4'
    np.testing.assert_array_equal(read_video(video), read_video(again.stdout.strip()))


def test_generate_with_the_v1_layout(release, tmp_path):
    out = tmp_path / 'portrait.gif'
    r = cli('generate', 'a red circle moving left', '--model', release['model'], '--motion-module', release['motion_module'],
            '--transformer-checkpoint', release['personalized'], '--lora', release['lora'], '--lora-weight', '0.55',
            '--sampler', 'DPM++', '--seed', '-1', '--fps', '8', *TINY, '--out', out)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out) and 'easyanimate: seed ' in r.stderr
    assert video_info(out)['frames'] == 4 and abs(video_info(out)['fps'] - 8) < 0.5


def test_info(release, tmp_path, capsys):
    r = cli('info', release['model'])
    assert r.returncode == 0 and 'loadable: yes' in r.stdout and 'Transformer2DModel' in r.stdout
    r = run(capsys, 'info', release['lora'])
    assert r.returncode == 0 and 'LoRA' in r.stdout and 'v1 format' in r.stdout
    broken = tmp_path / 'broken'
    shutil.copytree(release['model'], broken)
    (broken / 'transformer' / 'diffusion_pytorch_model.safetensors').write_bytes(b'\0' * 16)
    r = run(capsys, 'info', broken)
    assert r.returncode == 2 and r.stderr.startswith('easyanimate: error: ') and 'not a readable safetensors file' in r.stderr


def test_bad_input_in_a_real_process(tmp_path):
    r = cli('generate', ' ', '--out', tmp_path / 'out/')
    assert (r.returncode, r.stdout) == (2, '')
    assert r.stderr == 'easyanimate: error: the prompt is empty: describe the video to generate\n'


@pytest.mark.parametrize('args, message', [
    (['generate', 'x', '--size', '40x32'], 'height 40 is not a positive multiple of 32'),
    (['generate', 'x', '--sampler', 'Heun'], "unknown sampler 'Heun'"),
    (['generate', 'x', '--frames', '4097'], 'beyond the temporal position encoding'),
    (['generate', 'x', '--frames', '0'], 'frames >= 1'),
    (['generate', 'x', '--steps', 'ten'], "invalid int value: 'ten'"),
    (['generate', 'x', '--dtype', 'fp8'], "invalid choice: 'fp8'"),
])
def test_bad_input_is_one_line(args, message, tmp_path, capsys):
    r = run(capsys, *args, '--out', tmp_path / 'out/')
    assert r.returncode == 2
    assert r.stderr.startswith('easyanimate: error: ') and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / 'out').exists()


def test_bad_files_are_named(release, tmp_path, capsys):
    incomplete = tmp_path / 'incomplete'
    shutil.copytree(release['model'], incomplete)
    (incomplete / 'text_encoder' / 'config.json').unlink()
    r = run(capsys, 'generate', 'x', '--model', incomplete)
    assert r.returncode == 2 and 'missing text_encoder/config.json' in r.stderr
    r = run(capsys, 'generate', 'x', '--model', release['model'], '--motion-module', release['personalized'], *TINY, '--out', tmp_path / 'a.mp4')
    assert r.returncode == 2 and 'is not a motion-module file' in r.stderr and 'e.g.' in r.stderr
    assert not (tmp_path / 'a.mp4').exists()
    corrupt = tmp_path / 'corrupt.safetensors'
    corrupt.write_bytes(b'{"not": "safetensors"}')
    r = run(capsys, 'generate', 'x', '--model', release['model'], '--lora', corrupt, *TINY, '--out', tmp_path / 'b.mp4')
    assert r.returncode == 2 and 'not a readable safetensors file' in r.stderr and 'Traceback' not in r.stderr


def test_interrupt_and_unwritable_output(monkeypatch, capsys):
    import easyanimate.cli as C
    def interrupted(args): raise KeyboardInterrupt
    monkeypatch.setattr(C, 'cmd_info', interrupted)
    assert main(['info', '.']) == 130
    assert main(['generate', 'x', '--out', '/proc/easyanimate/x.mp4']) == 2
    assert 'cannot write' in capsys.readouterr().err


def test_gif_next_to_the_mp4(tmp_path):
    from PIL import Image
    r = cli('generate', 'a red circle moving left', *TINY, '--out', tmp_path / 'out/', '--gif', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    video, gif = [Path(line) for line in r.stdout.split()]
    assert (video.name, gif.name) == ('00000001.mp4', '00000001.gif') and Image.open(gif).n_frames == 4
    bad = cli('generate', 'a red circle moving left', *TINY, '--out', tmp_path / 'a.gif', '--gif', cwd=tmp_path)
    assert bad.returncode == 2 and '--gif adds a GIF next to an mp4 video' in bad.stderr and not (tmp_path / 'a.gif').exists()
    taken = cli('generate', 'a red circle moving left', *TINY, '--out', video, '--gif', cwd=tmp_path)
    assert taken.returncode == 2 and 'already exists' in taken.stderr
