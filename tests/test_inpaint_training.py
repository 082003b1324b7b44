"""End-to-end tests of `train_mode: inpaint` on CPU with tiny models: a run from a text-to-video folder (with a tiny CLIP
image encoder) trains and resumes to bit-identical weights; the three dataset formats; a LoRA on top of an inpaint
checkpoint; runs that could never learn the new channels are refused in one line; two processes under `accelerate launch`."""
import json, os, shutil, socket, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
import yaml

import easyanimate.training as T
from easyanimate.data import write_toy_video
from easyanimate.inpaint import tiny_image_encoder, save_image_encoder, INPAINT_CHANNELS
from easyanimate.shapes import make_dataset
from easyanimate.tiny import tiny_pipeline
from easyanimate.utils import load_state_dict, EasyAnimateError
from easyanimate.pipeline import load_pipeline
from PIL import Image, ImageSequence

ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false',
       'PYTHONWARNINGS': 'ignore'}


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope='module')
def t2v_dir(tmp_path_factory):
    "A tiny text-to-video pipeline folder."
    d = tmp_path_factory.mktemp('t2v')
    tiny_pipeline(0).save_pretrained(d)
    return d


@pytest.fixture(scope='module')
def clip_dir(t2v_dir, tmp_path_factory):
    "The same folder with a tiny CLIP image encoder in image_encoder/."
    d = tmp_path_factory.mktemp('clip') / 'model'
    shutil.copytree(t2v_dir, d)
    save_image_encoder(*tiny_image_encoder(0), d)
    return d


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    "Shapes clips in v1's JSON format (6 videos of 8 frames, 2 stills), a webvid CSV of toy videos, and an image folder."
    d = tmp_path_factory.mktemp('data')
    meta = make_dataset(d / 'shapes', 6, n_frames=8, size=32, n_images=2)
    (d / 'webvid').mkdir()
    for i in range(2): write_toy_video(d / 'webvid' / f'{i}.mp4', n_frames=8, height=32, width=32, seed=i)
    (d / 'webvid.csv').write_text('videoid,name\n0,a red square moving left\n1,a blue circle moving up\n')
    (d / 'images').mkdir()
    for i in range(2):
        img = np.full((32, 32, 3), 40, np.uint8); img[8:24, 4 + 8 * i:20 + 8 * i] = (200, 40 * i, 40)
        Image.fromarray(img).save(d / 'images' / f'{i}.png')
    (d / 'images' / 'metadata.jsonl').write_text(''.join(json.dumps({'file_name': f'{i}.png', 'text': f'a red square {i}'}) + '\n' for i in range(2)))
    return dict(normal=(d / 'shapes', meta), webvid=(d / 'webvid', d / 'webvid.csv'), imagefolder=(d / 'images', None))


def config(model_dir, data, out, fmt='normal', **kw):
    root, meta = data[fmt]
    return {**dict(pretrained_model_name_or_path=str(model_dir), train_data_dir=str(root), train_data_meta=str(meta) if meta else None,
                   video_sample_size=32, video_sample_n_frames=8, video_sample_stride=1, train_batch_size=2, learning_rate=2e-3,
                   lr_warmup_steps=0, max_train_steps=6, checkpointing_steps=1000, output_dir=str(out), sanity_check=False, seed=0,
                   train_mode='inpaint', trainable_modules=['.']), **kw}


@pytest.fixture(scope='module')
def inpaint_run(clip_dir, data, tmp_path_factory):
    "A whole-model inpaint run from the text-to-video folder with CLIP (its export is an inpaint transformer)."
    return T.train(config(clip_dir, data, tmp_path_factory.mktemp('run') / 'out', max_train_steps=10, validation_prompts=['a red circle moving left'],
                          validation_steps=10, validation_num_inference_steps=2))


def test_inpaint_run_exports_a_12_channel_transformer_that_learned_its_new_inputs(inpaint_run, t2v_dir):
    sd = load_state_dict(inpaint_run.export_path)
    assert inpaint_run.export_path.name == 'transformer.safetensors'
    assert sd['pos_embed.proj.weight'].shape[1] == INPAINT_CHANNELS
    assert sd['pos_embed.proj.weight'][:, 4:].abs().max() > 0          # the zero-filled channels trained
    assert sd['clip_projection.linear_2.weight'].abs().max() > 0       # and so did the zero-initialised image projection
    losses = np.array(inpaint_run.losses)
    assert losses[-3:].mean() < losses[:3].mean(), losses
    assert (inpaint_run.output_dir / 'validation' / 'step-000010-0.gif').is_file()   # validation videos: text-to-video with the inpaint model


def test_inpaint_run_resumes_bit_identically(clip_dir, data, tmp_path):
    opts = dict(checkpointing_steps=3, use_ema=True, gradient_accumulation_steps=2, train_batch_size=1, caption_dropout=0.5,
                random_flip=True, lr_warmup_steps=2, lr_scheduler='cosine')
    straight = T.train(config(clip_dir, data, tmp_path / 'straight', **opts))
    (tmp_path / 'resumed').mkdir()
    shutil.copytree(tmp_path / 'straight' / 'checkpoint-3', tmp_path / 'resumed' / 'checkpoint-3')
    resumed = T.train(config(clip_dir, data, tmp_path / 'resumed', resume_from_checkpoint='latest', **opts))
    assert resumed.steps == 6 and resumed.losses == straight.losses[3:]
    a, b = load_state_dict(straight.export_path), load_state_dict(resumed.export_path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_inpaint_run_draws_its_masks_with_the_configured_weights(t2v_dir, data, tmp_path):
    "inpaint_mask_p / inpaint_first_k_p reach the training loop: only 'first' masks, each keeping 4 frames, in the sanity check."
    result = T.train(config(t2v_dir, data, tmp_path / 'out', max_train_steps=1, train_batch_size=4, sanity_check=True,
                            inpaint_mask_p=[0, 0, 1, 0, 0], inpaint_first_k_p=[0, 0, 0, 1]))
    masked = sorted(p.name for p in (result.output_dir / 'sanity_check').glob('*-masked-*.gif'))
    assert masked == [f'{i:02d}-masked-first.gif' for i in range(4)], masked
    with Image.open(result.output_dir / 'sanity_check' / masked[0]) as gif:
        frames = [np.asarray(f.convert('RGB')) for f in ImageSequence.Iterator(gif)]
    assert frames[0].max() > 20 and frames[-1].max() < 20   # the first frames kept, the last generated (black); GIF merges equal frames


def test_clips_marked_not_for_text_to_video_always_keep_frames(t2v_dir, data, tmp_path):
    "An entry with text_to_video false never gets the 'whole' mask (nothing kept), whatever the weights."
    root, meta = data['normal']
    marked = tmp_path / 'marked.json'
    marked.write_text(json.dumps([{**e, 'text_to_video': False} for e in json.loads(Path(meta).read_text()) if e['type'] == 'video']))
    result = T.train(config(t2v_dir, data, tmp_path / 'out', max_train_steps=1, train_batch_size=4, sanity_check=True,
                            train_data_meta=str(marked), inpaint_mask_p=[0, 0.9, 0.1, 0, 0]))
    masked = sorted(p.name for p in (result.output_dir / 'sanity_check').glob('*-masked-*.gif'))
    assert masked == [f'{i:02d}-masked-first.gif' for i in range(4)], masked


def test_a_normal_run_warns_that_it_uses_marked_clips_as_text_to_video(data, tmp_path, caplog):
    "text_to_video false means something to inpaint training only: a normal run says so rather than ignore it silently."
    root, meta = data['normal']
    marked = tmp_path / 'marked.json'
    marked.write_text(json.dumps([{**e, 'text_to_video': False} for e in json.loads(Path(meta).read_text())]))
    opts = dict(pretrained_model_name_or_path='m', train_data_dir=str(root), train_data_meta=str(marked), video_sample_size=32, video_sample_n_frames=8)
    with caplog.at_level('WARNING'): T.make_data(T.train_config(None, [], **opts, train_mode='normal'))
    assert '8 of 8 samples are marked text_to_video false' in caplog.text and 'this normal run' in caplog.text
    caplog.clear()
    with caplog.at_level('WARNING'): T.make_data(T.train_config(None, [], **opts, train_mode='inpaint'))
    assert 'text_to_video' not in caplog.text


@pytest.mark.parametrize('fmt', ['webvid', 'imagefolder'])
def test_inpaint_run_reads_every_dataset_format(fmt, t2v_dir, data, tmp_path):
    "The JSON format is the one of the runs above; a folder without image_encoder/ trains without image tokens."
    result = T.train(config(t2v_dir, data, tmp_path / 'out', fmt, max_train_steps=2))
    sd = load_state_dict(result.export_path)
    assert result.steps == 2 and sd['pos_embed.proj.weight'].shape[1] == INPAINT_CHANNELS and not any(k.startswith('clip_projection') for k in sd)


def test_inpaint_lora_on_an_inpaint_checkpoint(t2v_dir, clip_dir, inpaint_run, data, tmp_path):
    result = T.train(config(clip_dir, data, tmp_path / 'out', lora=True, rank=4, network_alpha=4, learning_rate=1e-2, max_train_steps=4,
                            transformer_path=str(inpaint_run.export_path)))
    sd = load_state_dict(result.export_path)
    assert result.export_path.name == 'lora.safetensors' and all(k.startswith('lora_unet_') for k in sd)
    assert any('clip_projection' in k for k in sd)   # the image projection gets adapters like every linear layer
    assert any(k.endswith('lora_up.weight') and v.abs().max() > 0 for k, v in sd.items())
    # base folder + the inpaint checkpoint + the LoRA: an inpaint pipeline with the LoRA merged, generating from a start image
    base = load_pipeline(clip_dir, transformer_checkpoint=inpaint_run.export_path, dtype='fp32', device='cpu')
    pipe = load_pipeline(clip_dir, transformer_checkpoint=inpaint_run.export_path, lora=result.export_path, lora_weight=1.0, dtype='fp32', device='cpu')
    assert pipe.transformer.config.in_channels == INPAINT_CHANNELS and pipe.image_encoder is not None
    assert any(not torch.equal(a, b) for a, b in zip(base.transformer.state_dict().values(), pipe.transformer.state_dict().values()))
    start = Image.fromarray(np.full((32, 32, 3), 90, np.uint8))
    video = pipe('a red square moving left', image=start, video_length=8, height=32, width=32, num_inference_steps=2,
                 generator=torch.Generator().manual_seed(0)).videos
    assert video.shape == (1, 3, 8, 32, 32) and torch.isfinite(video).all()


@pytest.mark.parametrize('options, message', [
    (dict(lora=True), 'a LoRA has no adapter on the patch embedding'),
    (dict(trainable_modules=['attn_temporal']), "trainable_modules ['attn_temporal'] leave the patch embedding (pos_embed) frozen"),
    (dict(train_mode='normal', transformer_path='INPAINT'), 'is an inpaint transformer (12 input channels): train it with train_mode=inpaint'),
])
def test_runs_that_cannot_learn_are_refused_in_one_line(options, message, t2v_dir, data, inpaint_run, tmp_path):
    if options.get('transformer_path') == 'INPAINT':  # an inpaint checkpoint in a text-to-video run does not fit
        options = {**options, 'transformer_path': str(inpaint_run.export_path)}
    with pytest.raises(EasyAnimateError) as e: T.train(config(t2v_dir, data, tmp_path / 'out', **options))
    assert '\n' not in str(e.value) and (message is None or message in str(e.value)), str(e.value)
    assert not (tmp_path / 'out' / 'checkpoint-6').exists()


def test_normal_training_of_an_inpaint_folder_is_refused(t2v_dir, inpaint_run, data, tmp_path):
    folder = tmp_path / 'inpaint_model'
    shutil.copytree(t2v_dir, folder)
    cfg = json.loads((folder / 'transformer' / 'config.json').read_text())
    (folder / 'transformer' / 'config.json').write_text(json.dumps({**cfg, 'in_channels': INPAINT_CHANNELS}))
    with pytest.raises(EasyAnimateError, match='holds an inpaint model .* train it with train_mode=inpaint'):
        T.train(config(folder, data, tmp_path / 'out', train_mode='normal'))


def test_unknown_train_mode_is_one_clear_line(t2v_dir, data, tmp_path):
    with pytest.raises(EasyAnimateError, match="train_mode must be one of normal, inpaint, not 'inpainting'"):
        T.train_config(None, **config(t2v_dir, data, tmp_path, train_mode='inpainting'))


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def test_inpaint_with_two_processes_under_accelerate_launch(clip_dir, data, tmp_path):
    cfg = tmp_path / 'ddp.yaml'
    cfg.write_text(yaml.safe_dump(config(clip_dir, data, tmp_path / 'out', train_batch_size=1, max_train_steps=2, checkpointing_steps=2)))
    accelerate = Path(sys.executable).parent / 'accelerate'
    cmd = [str(accelerate), 'launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1', '--mixed_precision', 'no',
           '--dynamo_backend', 'no', '--main_process_port', str(free_port()), '-m', 'easyanimate.training', '--config', str(cfg)]
    proc = subprocess.run(cmd, env={**ENV, 'ACCELERATE_USE_CPU': 'true'}, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = tmp_path / 'out'
    assert load_state_dict(out / 'transformer.safetensors')['pos_embed.proj.weight'].shape[1] == INPAINT_CHANNELS
    assert sorted(p.name for p in (out / 'checkpoint-2').glob('random_states_*.pkl')) == ['random_states_0.pkl', 'random_states_1.pkl']


def test_easyanimate_generate_takes_an_inpaint_export_on_its_text_to_video_folder(clip_dir, inpaint_run, tmp_path, capsys):
    from easyanimate.cli import main
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(tmp_path / 'start.png')
    args = ['generate', 'a red circle moving left', '--model', str(clip_dir), '--image', str(tmp_path / 'start.png'), '--size', '32x32',
            '--frames', '8', '--steps', '2', '--out', str(tmp_path / 'out.mp4')]
    assert main(args) == 2 and 'needs an inpaint model' in capsys.readouterr().err   # the folder alone is text-to-video only
    assert main(args + ['--transformer-checkpoint', str(inpaint_run.export_path)]) == 0 and (tmp_path / 'out.mp4').is_file()
