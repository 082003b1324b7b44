"The bundled demo model: a complete pipeline folder in the package, small, loadable like any other, fast on a CPU, and it does what the prompt says."
import json, os, platform, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
from easyanimate.cli import demo_model_path, model_defaults, main
from easyanimate.demo_model import DEMO_DEFAULTS, demo_pipeline, demo_generate_fn, evaluate_model, read_training_record
from easyanimate.evaluate import analyse_clip, evaluate
from easyanimate.pipeline import check_model_dir
from easyanimate.shapes import eval_prompts

MODEL = demo_model_path()


def test_the_package_ships_it():
    assert MODEL is not None, "easyanimate/demo_model/ is missing: it is package data (scripts/train_demo.sh trains it)"


@pytest.fixture(scope='module')
def pipe(): return demo_pipeline()


def test_folder_is_complete_small_and_safetensors_only():
    info = check_model_dir(MODEL)
    assert info['is_video'] and info['transformer_config']['in_channels'] == 12 and info['transformer_config']['motion_module_kwargs']['temporal_position_encoding_max_len'] == 64
    files = [p for p in MODEL.rglob('*') if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 25e6
    assert not [p for p in files if p.suffix in ('.bin', '.pt', '.pth', '.ckpt')]
    assert {p.parent.name for p in files if p.suffix == '.safetensors'} == {'transformer', 'vae', 'text_encoder'}
    assert {k: model_defaults(MODEL)[k] for k in DEMO_DEFAULTS} == DEMO_DEFAULTS
    assert not [p for p in MODEL.glob('*/config.json') if '_name_or_path' in json.loads(p.read_text())]   # no path of the machine that trained it


def test_components_load_with_the_standard_classes():
    from transformers import AutoTokenizer, T5EncoderModel
    from diffusers import AutoencoderKL
    tok = AutoTokenizer.from_pretrained(MODEL / 'tokenizer')
    assert len(tok('a small magenta triangle moving right quickly').input_ids) == 8   # one token per word + </s>
    assert T5EncoderModel.from_pretrained(MODEL / 'text_encoder').config.d_model == 128
    assert AutoencoderKL.from_pretrained(MODEL / 'vae').config.scaling_factor != 0.18215   # its own, measured


def test_sixteen_frames_at_the_defaults(pipe):   # how fast: `make bench` (easyanimate.performance), not a timed assert
    video = pipe('a big green square moving down', video_length=16, num_inference_steps=DEMO_DEFAULTS['steps'],
                 guidance_scale=DEMO_DEFAULTS['guidance'], seed=3).videos
    assert tuple(video.shape) == (1, 3, 16, 64, 64) and torch.isfinite(video).all()


@pytest.fixture(scope='module')
def evaluation(pipe):
    "evaluate-demo's 28 prompts (16 seen, 12 held-out) at the model's defaults: the report and the clips."
    clips = []
    return evaluate(demo_generate_fn(pipe, keep=clips), eval_prompts(), verbose=False), [c for _, c in clips]


def test_evaluate_demo_scores_what_the_docs_say(evaluation):
    "Measured live: the 94% / 100% of the README and the demo-model chapter (chance is about 1 in 28); the one miss a colour."
    report, _ = evaluation
    right = {part: round(report[part]['both_ok'] * report[part]['n']) for part in ('seen', 'held_out')}
    assert right == {'seen': 15, 'held_out': 12}, (right, [c for c in report['clips'] if not c['both_ok']])
    assert report['all']['direction_ok'] == 1.0   # "every one of the 28" moves the asked-for way
    recorded = read_training_record()['steps']['evaluate']['scores']['final']
    assert all(recorded[part]['both_ok'] == report[part]['both_ok'] for part in ('seen', 'held_out'))   # the record is this model's


def test_shape_baseline_of_the_evaluation_chapter(evaluation):
    "The shape accuracy the README and the demo-model chapter state (69% / 67%): every square comes out as a circle."
    report, _ = evaluation
    right = {part: round(report[part]['shape_ok'] * report[part]['n']) for part in ('seen', 'held_out')}
    assert right == {'seen': 11, 'held_out': 8}, (right, [(c['prompt'], c['detected_shape']) for c in report['clips'] if not c['shape_ok']])
    squares = [c['detected_shape'] for c in report['clips'] if c['shape'] == 'square']
    assert len(squares) == 8 and set(squares) == {'circle'}


RECORDED = lambda key: read_training_record()['steps']['evaluate']['scores'][key]


@pytest.fixture(scope='module', params=['i2v', 'first-last', 'long'])
def mode_evaluation(request):
    "evaluate-demo's 28 prompts in an inpaint mode at the model's defaults (long: 48 frames in 16-frame segments), as the recipe scores them."
    return request.param, evaluate_model(MODEL, mode=request.param)


def test_every_mode_scores_what_its_record_says(mode_evaluation):
    "Measured live, each mode as the recipe's record has it: the same clips right, the same PSNR of the given frames and the same seams."
    mode, report = mode_evaluation
    recorded = RECORDED(f'final_{mode}')
    for part in ('seen', 'held_out'):
        for key in ('both_ok', 'direction_ok', 'shape_ok'): assert report[part][key] == recorded[part][key], (mode, part, key, report[part][key], recorded[part][key])
        for key in ('start_psnr', 'end_psnr', 'jump_ratio'):
            assert (report[part][key] is None) == (recorded[part][key] is None) and abs((report[part][key] or 0) - (recorded[part][key] or 0)) < 0.05, (mode, part, key)


def test_the_modes_that_meet_their_targets(mode_evaluation):
    "The issue's bars that the docs say the demo model meets: given frames >= 30 dB (i2v) and >= 28 dB (first-last), with the motion asked for; long videos keep their direction."
    mode, report = mode_evaluation
    seen, held = report['seen'], report['held_out']
    if mode == 'i2v':
        assert seen['start_psnr'] >= 30 and held['start_psnr'] >= 30 and seen['both_ok'] >= 0.9 and held['both_ok'] >= 0.8, (seen, held)
    elif mode == 'first-last':
        assert min(r[k] for r in (seen, held) for k in ('start_psnr', 'end_psnr')) >= 28 and report['all']['direction_ok'] >= 0.9, (seen, held)
    else:   # long videos meet their direction bar (>= 90%) and miss the seam one (largest jump <= 3x): the docs and the record say by how much
        assert seen['direction_ok'] >= 0.9 and held['direction_ok'] >= 0.9 and max(seen['jump_ratio'], held['jump_ratio']) > 3, (seen, held)


def test_cli_generate_uses_the_demo_model(tmp_path, capsys):
    assert main(['generate', 'a small yellow circle moving left', '--out', str(tmp_path / 'clip.gif'), '--steps', '8', '--quiet']) == 0
    assert (tmp_path / 'clip.gif').is_file() and 'RANDOM' not in capsys.readouterr().err


def test_cli_image_to_video_out_of_the_box(tmp_path):
    "`easyanimate generate PROMPT --image start.png` works with nothing but the package: the start frame comes back."
    from PIL import Image
    from easyanimate.evaluate import psnr
    from easyanimate.shapes import ClipSpec, render_clip
    from easyanimate.data import open_video
    start = render_clip(ClipSpec('green', 'circle', 'left', 'big', 'fast', seed=5))[0]
    Image.fromarray(start).save(tmp_path / 'start.png')
    assert main(['generate', 'a big green circle moving left', '--image', str(tmp_path / 'start.png'), '--out', str(tmp_path / 'clip.mp4'), '--quiet']) == 0
    frames = open_video(tmp_path / 'clip.mp4')[:].asnumpy()
    assert len(frames) == 16 and psnr(start, frames[0]) > 25   # H.264 costs a few dB of the 30+ the model gives


def test_the_diffusers_way_gives_the_same_video(pipe, tmp_path):
    # a diffusers user: `import easyanimate`, then DiffusionPipeline.from_pretrained and pipe(prompt) with nothing else;
    # the folder's defaults (model_index.json) fill the rest, as for load_pipeline and the command line
    import easyanimate  # noqa: F401  (registers EasyAnimateV1Pipeline with diffusers)
    from diffusers import DiffusionPipeline
    from easyanimate.pipeline import EasyAnimateV1Pipeline
    generic = DiffusionPipeline.from_pretrained(MODEL)
    assert type(generic) is EasyAnimateV1Pipeline and type(generic.scheduler) is type(pipe.scheduler)
    assert generic.scheduler.config.prediction_type == 'v_prediction'
    generic.set_progress_bar_config(disable=True)
    prompt, d = 'a small red square moving up', model_defaults(MODEL)
    out = generic(prompt, seed=42, num_inference_steps=6)
    assert tuple(out.frames.shape) == (1, d['frames'], 3, 64, 64)
    cli_call = pipe(prompt, negative_prompt=d['negative_prompt'], video_length=d['frames'], guidance_scale=d['guidance'],
                    num_inference_steps=6, seed=42).videos   # what `easyanimate generate` asks for
    assert torch.allclose(out.videos, cli_call, atol=1e-5)
    generic.save_pretrained(tmp_path / 'saved')
    assert model_defaults(tmp_path / 'saved') == d


AVX2_ONLY = {'ATEN_CPU_CAPABILITY': 'avx2', 'ONEDNN_MAX_CPU_ISA': 'AVX2', 'MKL_ENABLE_INSTRUCTIONS': 'AVX2'}
CLIPS_OF = """
import json, sys, numpy as np, torch
from easyanimate.attention import half_is_emulated
from easyanimate.demo_model import demo_pipeline, demo_generate_fn
generate = demo_generate_fn(demo_pipeline())
np.save(sys.argv[1], np.stack([generate(prompt, seed) for prompt, seed in json.loads(sys.argv[2])]))
print(torch.backends.cpu.get_cpu_capability(), half_is_emulated(torch.bfloat16))
"""

@pytest.mark.skipif(platform.machine() not in ('x86_64', 'AMD64'), reason='AVX2 is an x86-64 instruction set')
def test_an_avx2_only_cpu_makes_the_same_clips(evaluation, tmp_path):
    "The docs' AVX2 machine, emulated: PyTorch, oneDNN and MKL held to AVX2 in a fresh process make the same clips, so the same scores."
    report, clips = evaluation
    picked = [i for i, c in enumerate(report['clips']) if not c['both_ok']] + [0, len(clips) - 1]   # the misses are the close calls
    prompts = [[report['clips'][i]['prompt'], report['clips'][i]['seed']] for i in picked]
    proc = subprocess.run([sys.executable, '-c', CLIPS_OF, str(tmp_path / 'clips.npy'), json.dumps(prompts)],
                          env={**os.environ, **AVX2_ONLY}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ['AVX2', 'True'], proc.stdout   # the limits took effect: AVX2 kernels, bfloat16 emulated
    avx2, here = np.load(tmp_path / 'clips.npy'), np.stack([clips[i] for i in picked])
    assert np.abs(avx2.astype(int) - here).max() <= 2, np.abs(avx2.astype(int) - here).max()   # measured: 1 level of 255, on 1 pixel value in 50000
    assert [analyse_clip(c)['colour'] for c in avx2] == [report['clips'][i]['detected_colour'] for i in picked]
    assert [analyse_clip(c)['direction'] for c in avx2] == [report['clips'][i]['detected_direction'] for i in picked]
