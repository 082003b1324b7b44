"End-to-end checks of the demo evaluation: detectors on known clips, scoring, the pipeline wrapper and the CLI functions."
import argparse, json
from types import SimpleNamespace
import numpy as np
import pytest
import torch
from easyanimate.utils import EasyAnimateError
from easyanimate.shapes import COLOURS, SHAPES, DIRECTIONS, ClipSpec, render_clip, write_clip, read_clip, eval_prompts, parse_caption
from easyanimate.evaluate import (analyse_clip, detect_colour, detect_direction, temporal_smoothness, label_components, degrade,
                                  evaluate, render_generate_fn, pipeline_generate_fn, add_evaluate_args, evaluate_from_args, run_evaluate_demo)


def _specs():
    return [ClipSpec(c, SHAPES[i % 3], list(DIRECTIONS)[i % 4], ('small', 'big')[i % 2], ('slow', 'fast')[(i // 2) % 2], seed=i)
            for i, c in enumerate(COLOURS)]


def test_detectors_read_rendered_and_degraded_clips(tmp_path):
    for i, spec in enumerate(_specs()):
        clip = render_clip(spec)
        back = read_clip(write_clip(clip, tmp_path / f'{i}.mp4', pix_fmt='yuv420p', crf=18))   # the lossy kind
        for c in (clip, back, degrade(back, noise=30, blur=1, wash=0.5, seed=i), degrade(clip, wash=0.65)):
            a = analyse_clip(c)
            assert (a['colour'], a['direction']) == (spec.colour, spec.direction), (spec, a)
        assert detect_colour(clip) == spec.colour and detect_direction(clip) == spec.direction


def test_smoothness_tells_smooth_from_jumpy():
    clip = render_clip(ClipSpec('cyan', 'square', 'left', 'big', 'fast', seed=3))
    s = temporal_smoothness(clip)
    assert s['jitter'] < 0.05 and s['flicker'] == 0
    assert temporal_smoothness(clip[np.random.default_rng(1).permutation(16)])['jitter'] > 5
    assert detect_direction(np.repeat(clip[:1], 8, 0)) == 'none'
    assert detect_colour(np.full((4, 32, 32, 3), 40, np.uint8)) == 'none'


def test_labels_match_a_flood_fill():
    m = np.random.default_rng(0).random((2, 24, 30)) < 0.55
    lab = label_components(m)
    for f in range(2):  # same partition: pixels share a label iff 4-connected
        for y, x in zip(*np.nonzero(m[f])):
            for dy, dx in ((0, 1), (1, 0)):
                if y + dy < 24 and x + dx < 30 and m[f, y + dy, x + dx]: assert lab[f, y, x] == lab[f, y + dy, x + dx]
    assert len(np.unique(lab[m])) == len(np.unique(lab)) - 1 and (lab[~m] == 0).all()
    assert len(np.unique(lab)) > 10


def test_evaluate_scores_right_and_wrong_generators():
    prompts = eval_prompts(4, 3, seed=2)
    r = evaluate(render_generate_fn(), prompts, verbose=False)
    assert [r[k]['both_ok'] for k in ('seen', 'held_out', 'all')] == [1.0, 1.0, 1.0] and r['held_out']['n'] == 3
    json.dumps(r)
    flip = dict(left='right', right='left', up='down', down='up')
    def backwards(prompt, seed):
        w = parse_caption(prompt)
        return render_clip(ClipSpec(w['colour'], w['shape'], flip[w['direction']], w['size'], seed=seed))
    r = evaluate(backwards, prompts, verbose=False)
    assert (r['all']['colour_ok'], r['all']['direction_ok'], r['all']['both_ok']) == (1.0, 0.0, 0.0)


def test_pipeline_generate_fn_calls_the_pipeline_as_agreed():
    from easyanimate.samplers import get_scheduler
    calls = []
    class Pipe:
        scheduler = get_scheduler('DDIM')
        def __call__(self, prompt, generator, **kw):
            calls.append(dict(kw, scheduler=type(self.scheduler).__name__))
            clip = render_generate_fn(kw['video_length'], kw['height'])(prompt, generator.initial_seed())
            return SimpleNamespace(frames=clip[None].astype(np.float32) / 255)   # [1, F, H, W, 3] float
    pipe = Pipe()
    gen = pipeline_generate_fn(pipe, steps=3, sampler='dpm++', guidance=5.0, n_frames=8, size=32)
    frames = gen('a big red circle moving left', 7)
    assert frames.shape == (8, 32, 32, 3) and frames.dtype == np.uint8
    assert calls[0] == dict(video_length=8, height=32, width=32, output_type='np', num_inference_steps=3, guidance_scale=5.0,
                            scheduler='DPMSolverMultistepScheduler')
    assert type(pipe.scheduler).__name__ == 'DDIMScheduler'


def test_cli_functions(tmp_path):
    parser = add_evaluate_args(argparse.ArgumentParser())
    out = tmp_path / 'r.json'
    r = run_evaluate_demo(parser.parse_args(['--oracle', '--seen', '2', '--held-out', '2', '--json', str(out), '--min-seen', '0.9']))
    assert json.loads(out.read_text())['all']['both_ok'] == r['all']['both_ok'] == 1.0
    assert evaluate_from_args(parser.parse_args(['--oracle', '--seen', '1', '--held-out', '1'])) == 0   # the command's exit status, not the report
    with pytest.raises(EasyAnimateError, match='not both'): evaluate_from_args(parser.parse_args(['--oracle', '--model', str(tmp_path)]))
    with pytest.raises(EasyAnimateError, match='below the required 101%'):
        evaluate_from_args(parser.parse_args(['--oracle', '--seen', '1', '--held-out', '0', '--min-seen', '1.01']))
    from easyanimate.cli import main
    assert main(['evaluate-demo', '--oracle', '--seen', '2', '--held-out', '1', '--min-shape', '1.0', '--min-colour-direction', '1.0']) == 0
    assert main(['evaluate-demo', '--oracle', '--seen', '0', '--held-out', '1', '--min-shape', '1.01']) == 1   # a missed bar: 1, bad input: 2


def test_shape_is_read_back_from_rendered_and_degraded_clips(tmp_path):
    from easyanimate.evaluate import detect_shape
    for i, spec in enumerate(ClipSpec(c, s, list(DIRECTIONS)[i % 4], ('small', 'big')[i % 2], seed=i)
                             for i, (c, s) in enumerate((c, s) for c in ('red', 'blue', 'white') for s in SHAPES)):
        clip = render_clip(spec)
        back = read_clip(write_clip(clip, tmp_path / f'{i}.mp4', pix_fmt='yuv420p', crf=18))
        assert detect_shape(clip) == detect_shape(back) == analyse_clip(back)['shape'] == spec.shape, spec


def test_evaluate_runs_on_a_real_tiny_pipeline(tmp_path):
    "The wrapper and the CLI path against an EasyAnimateV1Pipeline of tiny random components (scores are chance level)."
    from easyanimate import tiny
    from easyanimate.shapes import caption_vocabulary
    pipe = tiny.tiny_pipeline(words=caption_vocabulary())
    pipe.set_progress_bar_config(disable=True)
    gen = pipeline_generate_fn(pipe, steps=2, sampler='DDIM', guidance=3.0, n_frames=8, size=32)
    assert gen('a big red circle moving left', 0).shape == (8, 32, 32, 3)
    pipe.save_pretrained(tmp_path / 'model')
    args = add_evaluate_args(argparse.ArgumentParser()).parse_args(
        ['--model', str(tmp_path / 'model'), '--seen', '1', '--held-out', '1', '--steps', '2', '--frames', '8', '--size', '32', '--device', 'cpu'])
    r = run_evaluate_demo(args)
    assert (r['seen']['n'], r['held_out']['n']) == (1, 1)
    assert all(0 <= r['all'][k] <= 1 for k in ('colour_ok', 'direction_ok', 'both_ok'))


def test_dataset_labels_survive_the_training_data_layer(tmp_path):
    "make_dataset -> easyanimate.data (decord, sampling, crop, [-1, 1]) keeps colour and direction, unless flipped."
    from easyanimate.data import load_samples, VideoImageDataset
    from easyanimate.shapes import make_dataset
    samples = load_samples(train_data_meta=str(make_dataset(tmp_path, n_clips=12, seed=3, n_images=2)))
    def kept(random_flip):
        ds = VideoImageDataset(samples, video_sample_size=64, video_sample_stride=1, video_sample_n_frames=16, random_flip=random_flip)
        out = []
        for ex in (ds[i] for i in range(len(ds))):
            a, w = analyse_clip((ex['pixel_values'].permute(0, 2, 3, 1) + 1) / 2), parse_caption(ex['text'])
            out.append(a['colour'] == w['colour'] and a['direction'] == w.get('direction', 'none'))
        return np.mean(out)
    assert kept(False) == 1.0
    assert kept(True) < 1.0   # mirrored left/right clips contradict their captions: train the demo without random_flip


@pytest.fixture(scope='module')
def demo_model():
    "The bundled demo model: an inpaint model, so it runs every mode."
    from easyanimate.cli import demo_model_path
    return demo_model_path()


@pytest.mark.parametrize('mode, extra', [('i2v', []), ('first-last', []), ('long', ['--frames', '24', '--segment-frames', '16', '--overlap', '4'])])
def test_modes_on_the_demo_model(demo_model, mode, extra, tmp_path):
    parser = add_evaluate_args(argparse.ArgumentParser())
    out = tmp_path / 'r.json'
    r = run_evaluate_demo(parser.parse_args(['--model', str(demo_model), '--mode', mode, '--seen', '1', '--held-out', '1',
                                             '--steps', '2', '--device', 'cpu', '--json', str(out), *extra]))
    assert r['mode'] == mode and (r['seen']['n'], r['held_out']['n']) == (1, 1)
    assert all(0 <= r['all'][k] <= 1 for k in ('both_ok', 'shape_ok'))
    if mode == 'long':
        assert r['all']['start_psnr'] is None and (r['all']['jump_ratio'] is None or r['all']['jump_ratio'] >= 1)
    else:
        assert 5 < r['all']['start_psnr'] <= 100 and r['all']['jump_ratio'] is None
        assert (r['all']['end_psnr'] is None) == (mode == 'i2v')
    assert json.loads(out.read_text())['mode'] == mode
    from easyanimate.cli import main
    bar = ['--min-colour-direction', '1.01'] if mode == 'long' else ['--min-given-psnr', '101']   # a bar nothing reaches: exit status 1
    assert main(['evaluate-demo', '--model', str(demo_model), '--mode', mode, '--seen', '1', '--held-out', '0', '--steps', '2', *extra, *bar]) == 1
