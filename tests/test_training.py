"""End-to-end training tests on CPU: every mode learns on an overfit batch and exports v1-format weights the pipeline loads;
a SIGKILLed run resumes to exactly the weights of an uninterrupted one; two processes under `accelerate launch`; NaN stops."""
import argparse, errno, json, os, re, signal, socket, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import easyanimate.training as T
from easyanimate.data import write_toy_video, load_samples, VideoImageDataset, collate_samples
from easyanimate.pipeline import EasyAnimateV1Pipeline
from easyanimate.tiny import tiny_pipeline
from easyanimate.utils import load_state_dict, EasyAnimateError

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false',
       'PYTHONWARNINGS': 'ignore'}


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    "Tiny models train fastest on one thread, and the test machine is shared."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp('model')
    tiny_pipeline(0).save_pretrained(d)
    return d


@pytest.fixture(scope='module')
def v1_release(tmp_path_factory):
    "Look-alikes of v1's release: a PixArt folder (2D transformer, T5-style tokenizer) and a motion-module file."
    from easyanimate.tiny import save_v1_release
    return save_v1_release(tmp_path_factory.mktemp('v1'))


CAPTIONS = ['a red square moving left', 'a blue circle moving up', 'a green square moving right']

@pytest.fixture(scope='module')
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp('videos')
    (d/'videos').mkdir()
    for i, text in enumerate(CAPTIONS): write_toy_video(d/'videos'/f'{i}.mp4', n_frames=8, height=32, width=32, seed=i)
    (d/'videos'/'corrupt.mp4').write_bytes(b'not an mp4' * 64)
    write_toy_video(d/'videos'/'short.mp4', n_frames=2, height=32, width=32)
    entries = [{'file_path': f'videos/{i}.mp4', 'text': t, 'type': 'video'} for i, t in enumerate(CAPTIONS)]
    (d/'two.json').write_text(json.dumps(entries[:2]))
    (d/'three.json').write_text(json.dumps(entries))
    bad = entries + [{'file_path': 'videos/corrupt.mp4', 'text': 'x', 'type': 'video'}, {'file_path': 'videos/missing.mp4', 'text': 'y', 'type': 'video'},
                     {'file_path': 'videos/short.mp4', 'text': 'z', 'type': 'video'}]
    (d/'with_bad.json').write_text(json.dumps(bad))
    return d


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp('images')
    rng = np.random.default_rng(0)
    for i in range(2):
        img = np.full((32, 32, 3), 40, np.uint8); img[8:24, 4 + 8 * i:20 + 8 * i] = rng.integers(0, 256, 3)
        Image.fromarray(img).save(d/f'{i}.png')
    (d/'metadata.jsonl').write_text(''.join(json.dumps({'file_name': f'{i}.png', 'text': CAPTIONS[i]}) + '\n' for i in range(2)))
    return d


def config(model_dir, data, meta, out, **kw):
    return {**dict(pretrained_model_name_or_path=str(model_dir), train_data_dir=str(data), train_data_meta=str(meta) if meta else None,
                   video_sample_size=32, video_sample_n_frames=4, video_sample_stride=1, train_batch_size=2, caption_dropout=0.0,
                   learning_rate=2e-3, lr_warmup_steps=0, max_train_steps=15, checkpointing_steps=1000, output_dir=str(out),
                   sanity_check=False, random_flip=False, seed=0), **kw}


def eval_loss(pipe, samples, steps=(20, 100, 250, 400, 600, 800, 900, 990), repeats=3):
    "The v1 loss of `pipe`'s transformer on fixed samples, timesteps and noise (lower is better)."
    ds = VideoImageDataset(samples, 32, 1, 4, random_flip=False)
    batch = collate_samples([ds[i] for i in range(len(samples))])
    latents = pipe.vae.encode(batch['pixel_values'].flatten(0, 1)).latent_dist.mean
    latents = latents.unflatten(0, batch['pixel_values'].shape[:2]).transpose(1, 2) * pipe.vae.config.scaling_factor
    tok = T.tokenize(pipe.tokenizer, batch['text'])
    text = dict(encoder_hidden_states=pipe.text_encoder(tok.input_ids, attention_mask=tok.attention_mask)[0], encoder_attention_mask=tok.attention_mask)
    objective, g, total = T.DiffusionObjective(T.make_train_scheduler()), torch.Generator().manual_seed(1), []
    with torch.no_grad():
        for _ in range(repeats):
            for t in steps:
                noise = torch.randn(latents.shape, generator=g)
                total.append(T.diffusion_loss(T.Trainee(pipe.transformer), objective, latents, torch.full((len(latents),), t), noise, text)['loss'].item())
    return float(np.mean(total))


MODES = {  # name: (options, data, how the pipeline loads the export, expected export file)
    'motion_module': (dict(validation_prompts=[CAPTIONS[0]], validation_steps=15, validation_num_inference_steps=2), 'videos',
                      'motion_module', 'motion_module.safetensors'),
    'dit_t2v': (dict(trainable_modules=['.'], learning_rate=1e-3, gradient_checkpointing=True), 'videos', 'transformer_checkpoint', 'transformer.safetensors'),
    'dit_t2i': (dict(trainable_modules=['.'], learning_rate=1e-3, train_data_format='imagefolder'), 'images', 'transformer_checkpoint', 'transformer.safetensors'),
    # as scripts/train_lora.sh: a PixArt folder plus v1's motion module, adapters on the transformer and on T5
    'lora': (dict(lora=True, rank=4, network_alpha=4, train_text_encoder=True, learning_rate=1e-2), 'videos', 'lora', 'lora.safetensors'),
}

def uniform_distance(timesteps, n=1000) -> float:
    "Kolmogorov-Smirnov distance of integer `timesteps` from the uniform distribution on 0 .. n-1."
    u, k = np.sort((np.asarray(timesteps) + 0.5) / n), len(timesteps)
    return max((np.arange(1, k + 1) / k - u).max(), (u - np.arange(k) / k).max())

def ks_critical(k): return 1.63 / np.sqrt(k)   # a uniform sample of k exceeds it with probability 1%

def test_uniform_distance_tells_a_low_noise_sampler():
    rng = np.random.default_rng(0)
    assert uniform_distance(rng.integers(0, 1000, 30)) < ks_critical(30) < uniform_distance(rng.integers(0, 250, 30))
    assert uniform_distance(rng.integers(0, 1000, 30)) < ks_critical(30) < uniform_distance(rng.integers(500, 1000, 30))


@pytest.mark.parametrize('mode', list(MODES))
def test_mode_learns_and_exports_for_the_pipeline(mode, model_dir, v1_release, videos, images, tmp_path, monkeypatch):
    options, data, load_as, export_name = MODES[mode]
    base_kw = {}
    if mode == 'lora':
        model_dir, base_kw = v1_release['model'], {'motion_module': v1_release['motion_module']}
        options = {**options, 'motion_module_path': str(v1_release['motion_module'])}
    cfg = (config(model_dir, videos, videos/'two.json', tmp_path/'out', **options) if data == 'videos'
           else config(model_dir, images, None, tmp_path/'out', **options))
    drawn, loss = [], T.diffusion_loss
    monkeypatch.setattr(T, 'diffusion_loss', lambda trainee, objective, latents, timesteps, *a: drawn.extend(timesteps.tolist()) or loss(trainee, objective, latents, timesteps, *a))
    result = T.train(cfg)
    monkeypatch.undo()
    assert result.steps == 15 and result.export_path == tmp_path/'out'/export_name
    assert len(drawn) == 30 and all(isinstance(t, int) and 0 <= t < 1000 for t in drawn)   # v1: uniform over the 1000 training steps
    assert uniform_distance(drawn) < ks_critical(30), sorted(drawn)
    losses = np.array(result.losses)
    assert losses[-5:].mean() < losses[:5].mean(), losses

    exported = load_state_dict(result.export_path)
    base = EasyAnimateV1Pipeline.from_pretrained(model_dir, **base_kw)
    if load_as == 'motion_module':
        assert all('.attn_temporal.' in k for k in exported) and any(k.endswith('pos_encoder.pe') for k in exported)
        assert sorted(exported) == sorted(k for k in base.transformer.state_dict() if '.attn_temporal.' in k)
    elif load_as == 'transformer_checkpoint':
        assert sorted(exported) == sorted(base.transformer.state_dict())
    else:
        assert all(k.startswith(('lora_unet_', 'lora_te_')) for k in exported) and any(k.startswith('lora_te_') for k in exported)
        assert any('_attn_temporal_' in k for k in exported)  # v1 puts adapters in the motion module too
        assert {k.rsplit('.', 2)[-2] if not k.endswith('alpha') else 'alpha' for k in exported} == {'lora_down', 'lora_up', 'alpha'}
    trained = EasyAnimateV1Pipeline.from_pretrained(model_dir, **base_kw, **({'lora': result.export_path, 'lora_weight': 1.0} if load_as == 'lora' else {load_as: result.export_path}))
    samples = load_samples(images) if data == 'images' else load_samples(videos, videos/'two.json')
    before, after = eval_loss(base, samples), eval_loss(trained, samples)
    assert after < 0.85 * before, (before, after)
    if mode == 'motion_module': assert (tmp_path/'out'/'validation'/'step-000015-0.gif').is_file()
    if mode == 'dit_t2i': assert next((tmp_path/'out').glob('**/*.png'))


DRIVER = '''
import os, signal, sys
import easyanimate.training as T
commit = T.commit_checkpoint
def commit_or_die(tmp, final):  # SIGKILL in the middle of saving checkpoint-KILL_AT: its temporary folder is complete, not renamed
    if T.checkpoint_step(final) == int(sys.argv[2]): os.kill(os.getpid(), signal.SIGKILL)
    return commit(tmp, final)
T.commit_checkpoint = commit_or_die
sys.exit(T.main(['--config', sys.argv[1]]))
'''

def test_killed_run_resumes_to_the_same_weights(model_dir, videos, tmp_path):
    opts = dict(max_train_steps=10, checkpointing_steps=4, use_ema=True, gradient_accumulation_steps=2, train_batch_size=1,
                caption_dropout=0.5, random_flip=True, lr_warmup_steps=3, lr_scheduler='cosine')
    straight = T.train(config(model_dir, videos, videos/'three.json', tmp_path/'straight', **opts))

    cfg = tmp_path/'run.yaml'
    cfg.write_text(yaml.safe_dump(config(model_dir, videos, videos/'three.json', tmp_path/'killed', **opts)))
    (tmp_path/'driver.py').write_text(DRIVER)
    proc = subprocess.run([sys.executable, str(tmp_path/'driver.py'), str(cfg), '8'], env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    out = tmp_path/'killed'
    assert [p.name for p in T.list_checkpoints(out)] == ['checkpoint-4'] and (out/'.checkpoint-8.tmp').is_dir()
    assert not (out/'motion_module.safetensors').exists()

    resumed = T.train({**yaml.safe_load(cfg.read_text()), 'resume_from_checkpoint': 'latest'})
    assert resumed.steps == 10 and not (out/'.checkpoint-8.tmp').exists()
    a, b = load_state_dict(straight.export_path), load_state_dict(resumed.export_path)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), max((a[k] - b[k]).abs().max().item() for k in a)
    assert np.array_equal(T.MetricsLog(tmp_path/'straight'/'logs'/'metrics.csv').column('loss'), T.MetricsLog(out/'logs'/'metrics.csv').column('loss'))
    assert not torch.equal(a[next(k for k in a if k.endswith('proj_out.weight'))], torch.zeros(1))  # the module did train


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def test_two_processes_with_accelerate_launch(model_dir, videos, tmp_path):
    cfg = tmp_path/'ddp.yaml'
    cfg.write_text(yaml.safe_dump(config(model_dir, videos, videos/'with_bad.json', tmp_path/'out', train_batch_size=1, max_train_steps=3,
                                         checkpointing_steps=2, use_ema=True, enable_bucket=True)))  # buckets: bad files show up in the sampler
    # `--cpu --num_processes 2` starts ONE process unless MPI is set up; torchrun's launcher (--multi_gpu) with
    # ACCELERATE_USE_CPU starts two CPU processes that talk over gloo (DistributedType.MULTI_CPU)
    accelerate = Path(sys.executable).parent/'accelerate'
    cmd = [str(accelerate), 'launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1', '--mixed_precision', 'no',
           '--dynamo_backend', 'no', '--main_process_port', str(free_port()), '-m', 'easyanimate.training', '--config', str(cfg)]
    proc = subprocess.run(cmd, env={**ENV, 'ACCELERATE_USE_CPU': 'true'}, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = tmp_path/'out'
    assert (out/'motion_module.safetensors').is_file() and [p.name for p in T.list_checkpoints(out)] == ['checkpoint-2', 'checkpoint-3']
    assert sorted(p.name for p in (out/'checkpoint-2').glob('random_states_*.pkl')) == ['random_states_0.pkl', 'random_states_1.pkl']
    assert T.MetricsLog(out/'logs'/'metrics.csv').column('step').tolist() == [1, 2, 3]
    skipped = (out/'skipped_samples.txt').read_text()
    assert 'corrupt.mp4' in skipped and 'missing.mp4' in skipped and 'short.mp4' in skipped


def test_nan_loss_stops_and_keeps_the_last_checkpoint(model_dir, videos, tmp_path, monkeypatch):
    calls, call = [], T.DiffusionObjective.__call__
    def poisoned(self, *args):
        terms = call(self, *args); calls.append(1)
        if len(calls) == 3: terms['loss'] = terms['loss'] * float('nan')
        return terms
    monkeypatch.setattr(T.DiffusionObjective, '__call__', poisoned)
    cfg = config(model_dir, videos, videos/'two.json', tmp_path/'out', max_train_steps=6, checkpointing_steps=2)
    with pytest.raises(T.TrainingDiverged, match=r'step 3: the loss is not finite.*checkpoint-2.*lower learning_rate'):
        T.train(cfg)
    out = tmp_path/'out'
    assert [p.name for p in T.list_checkpoints(out)] == ['checkpoint-2'] and not (out/'motion_module.safetensors').exists()
    monkeypatch.undo()
    assert T.train({**cfg, 'resume_from_checkpoint': 'latest'}).steps == 6  # the kept checkpoint is good


def test_command_line_errors_are_one_clear_line(images, tmp_path, capsys):
    (tmp_path/'c.yaml').write_text(f'pretrained_model_name_or_path: nowhere\ntrain_data_dir: {images}\n')
    def error(*argv):
        assert T.main(['--config', str(tmp_path/'c.yaml'), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        return err
    assert 'unknown training option learning_rat (did you mean learning_rate?)' in error('learning_rat=1')
    assert 'unrecognized arguments: --max_train_step (did you mean --max_train_steps?)' in error('--max_train_step', '3')   # no abbreviations
    assert 'unrecognized arguments: --learning-rate (did you mean --learning_rate?)' in error('max_train_steps=3', '--learning-rate', '1')
    (tmp_path/'typo.yaml').write_text(f'pretrained_model_name_or_path: nowhere\ntrain_data_dir: {images}\nlearning_rat: 1\n')
    assert 'unknown training option learning_rat (did you mean learning_rate?)' in error('--config', str(tmp_path/'typo.yaml'))
    assert 'pretrained_model_name_or_path nowhere: no such folder' in error()
    assert f'{images} is not a pipeline folder: no tokenizer, text_encoder, vae, transformer subfolder' in error(f'pretrained_model_name_or_path={images}')
    with pytest.raises(EasyAnimateError, match='trainable_modules .* match no parameter'):
        T.select_trainable(tiny_pipeline(0).transformer, ['attn_temporl'])


def test_t2v_script_runs(model_dir, videos, tmp_path):
    "The script on a webvid CSV (the format follows the extension), with the start and end summaries and no library noise."
    (tmp_path/'webvid.csv').write_text('videoid,name\n0,a red square moving left\n1,a blue circle moving up\n')
    env = {**ENV, 'MODEL_NAME': str(model_dir), 'DATASET_NAME': str(videos/'videos'), 'DATASET_META_NAME': str(tmp_path/'webvid.csv'),
           'ACCELERATE': str(Path(sys.executable).parent/'accelerate'), 'ACCELERATE_ARGS': '--cpu --num_processes 1 --mixed_precision no --dynamo_backend no'}
    proc = subprocess.run(['bash', str(REPO/'scripts'/'train_t2v.sh'), 'mixed_precision=no', 'video_sample_size=32', 'video_sample_n_frames=4',
                           'max_train_steps=2', 'dataloader_num_workers=0', 'validation_steps=2', 'validation_num_inference_steps=2',
                           'gradient_checkpointing=false', f'output_dir={tmp_path/"out"}'], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    saved = yaml.safe_load((tmp_path/'out'/'train_config.yaml').read_text())
    assert (saved['learning_rate'], saved['use_ema'], saved['trainable_modules'], saved['vae_mini_batch'], saved['adam_epsilon']) == (2e-5, True, ['attn_temporal'], 16, 1e-10)
    assert (tmp_path/'out'/'motion_module.safetensors').is_file() and (tmp_path/'out'/'validation'/'step-000002-0.gif').is_file()
    assert f'data: 2 samples (2 videos, 0 images) in {tmp_path/"webvid.csv"} (webvid format)' in proc.stdout, proc.stdout
    assert 'effective batch 2 (2 per process x 1 process x 1 accumulated)' in proc.stdout and 'learning rate rises only to 4e-07' in proc.stdout
    assert 'finished at step 2: loss ' in proc.stdout and f'weights:     {tmp_path/"out"/"motion_module.safetensors"}' in proc.stdout
    assert 'kept in float32' not in proc.stderr and 'Traceback' not in proc.stderr


def test_scripts_take_the_format_from_the_file_and_an_empty_variable_means_none(tmp_path):
    fake = tmp_path/'accelerate'
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$ARGS_OUT"\n'); fake.chmod(0o755)
    def run(script, **env):
        subprocess.run(['bash', str(REPO/'scripts'/script)], env={**ENV, 'ACCELERATE': str(fake), 'ARGS_OUT': str(tmp_path/'args'), **env}, check=True, timeout=60)
        words = (tmp_path/'args').read_text().splitlines()
        return T.args_to_config(T.add_train_args(argparse.ArgumentParser()).parse_args(words[words.index('easyanimate.training') + 1:]))
    c = run('train_lora.sh', MOTION_MODULE='', DATASET_META_NAME='clips/webvid.csv')
    assert (c.motion_module_path, c.train_data_format, c.train_data_meta) == (None, 'auto', 'clips/webvid.csv')
    from easyanimate.data import infer_data_format
    assert infer_data_format(c.train_data_meta) == 'webvid'
    c = run('train_t2v.sh', DATASET_META_NAME='', DATASET_FORMAT='imagefolder')
    assert (c.train_data_meta, c.train_data_format) == (None, 'imagefolder')
    assert run('train_t2i.sh', DATASET_FORMAT='').train_data_format == 'auto'
    with pytest.raises(EasyAnimateError, match='pretrained_model_name_or_path .* is required'): run('train_t2v.sh', MODEL_NAME='')


def test_help_shows_no_placeholders(capsys):
    from easyanimate.cli import build_parser
    with pytest.raises(SystemExit): build_parser('train').parse_args(['train', '--help'])
    out = capsys.readouterr().out
    assert 'OPT__' not in out and '--sample_size INT' in out and '--overwrite_output_dir [BOOL]' in out, out


def test_missing_caption_key_stops_before_training(model_dir, videos, images, tmp_path, capsys):
    entries = [{'file_path': f'videos/{i}.mp4', 'caption': t, 'type': 'video'} for i, t in enumerate(CAPTIONS)]
    (tmp_path/'caption_key.json').write_text(json.dumps(entries))
    (tmp_path/'c.yaml').write_text(yaml.safe_dump(config(model_dir, videos, tmp_path/'caption_key.json', tmp_path/'out')))
    assert T.main(['--config', str(tmp_path/'c.yaml')]) == 2
    assert "entry 0 (and 2 more) has no caption 'text'; found ['caption', 'file_path', 'type']" in capsys.readouterr().err
    assert T.main(['--config', str(tmp_path/'c.yaml'), f'train_data_dir={images}', 'train_data_meta=', 'caption_column=caption']) == 2
    assert "line 1 (and 1 more) has no caption 'caption'; found ['file_name', 'text']. Set caption_column" in capsys.readouterr().err
    assert not (tmp_path/'out').exists()


def snapshot(folder): return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in Path(folder).rglob('*')}

def test_an_output_dir_holding_a_run_is_refused(model_dir, videos, tmp_path, capsys):
    out = tmp_path/'out'
    (tmp_path/'c.yaml').write_text(yaml.safe_dump(config(model_dir, videos, videos/'two.json', out, max_train_steps=4, checkpointing_steps=2)))
    run = lambda *words: T.main(['--config', str(tmp_path/'c.yaml'), *words])
    assert run() == 0
    before = snapshot(out)
    assert run('max_train_steps=2') == 2
    err = capsys.readouterr().err
    assert f'output_dir {out} holds an earlier run (checkpoint-2, checkpoint-4, logs, loss_curve.png, motion_module.safetensors, ...); nothing was changed' in err
    assert 'resume_from_checkpoint=latest, train into another output_dir, or set overwrite_output_dir=true' in err
    assert snapshot(out) == before
    assert run('max_train_steps=2', 'overwrite_output_dir=true') == 0
    assert [p.name for p in T.list_checkpoints(out)] == ['checkpoint-2'] and T.MetricsLog(out/'logs'/'metrics.csv').column('step').tolist() == [1, 2]
    capsys.readouterr()
    assert run('max_train_steps=2', 'resume_from_checkpoint=latest') == 0
    assert f'nothing to train: {out/"checkpoint-2"} is at step 2 and this run ends at step 2; raise max_train_steps' in capsys.readouterr().out


def test_full_disk_ends_with_one_line_and_the_run_resumes_to_the_same_weights(model_dir, videos, tmp_path, monkeypatch, capsys):
    "ENOSPC in the middle of writing checkpoint-4, then in the final export: each time one line, no half-written folder, and resuming ends where an uninterrupted run does."
    import easyanimate.utils as U
    opts = dict(max_train_steps=6, checkpointing_steps=2, use_ema=True, caption_dropout=0.5, random_flip=True, lr_warmup_steps=2)
    straight = T.train(config(model_dir, videos, videos/'three.json', tmp_path/'straight', **opts))
    out, cfg = tmp_path/'full', tmp_path/'run.yaml'
    cfg.write_text(yaml.safe_dump(config(model_dir, videos, videos/'three.json', out, **opts)))
    real = U.save_file
    def fill_disk_at(where):
        def save_file(tensors, filename, metadata=None):
            if where(Path(filename)):
                Path(filename).write_bytes(b'\0' * 100)   # part of the file made it to the disk
                raise OSError(errno.ENOSPC, 'No space left on device')
            return real(tensors, filename, metadata=metadata)
        monkeypatch.setattr(U, 'save_file', save_file)
    def one_error_line(status, *argv):
        capsys.readouterr()
        assert T.main(['--config', str(cfg), *argv]) == status
        err = capsys.readouterr().err
        lines = [l for l in err.splitlines() if 'error' in l.lower()]
        assert len(lines) == 1 and 'Traceback' not in err, err
        return lines[0]

    fill_disk_at(lambda f: f.parent.name == '.checkpoint-4.tmp')
    line = one_error_line(1)
    assert re.match(rf'error: the disk is full: writing checkpoint-4 in {re.escape(str(out))} needs about [\d.]+ [kMG]?B free \([\d.]+ [kMG]?B free now\); ', line), line
    assert line.endswith(f'the last good checkpoint is {out/"checkpoint-2"}: free some space, then continue with resume_from_checkpoint=latest'), line
    assert [p.name for p in T.list_checkpoints(out)] == ['checkpoint-2'] and not list(out.glob('.checkpoint-*'))

    fill_disk_at(lambda f: f.parent == out and f.name.startswith('.motion_module.safetensors'))
    line = one_error_line(1, 'resume_from_checkpoint=latest')
    assert f'writing motion_module.safetensors in {out}' in line and f'the last good checkpoint is {out/"checkpoint-6"}' in line, line
    assert not (out/'motion_module.safetensors').exists() and not [p for p in out.iterdir() if p.name.startswith('.motion_module')]

    monkeypatch.setattr(U, 'save_file', real)   # space freed
    assert T.main(['--config', str(cfg), 'resume_from_checkpoint=latest']) == 0
    assert 'nothing to train' in capsys.readouterr().out
    a, b = load_state_dict(straight.export_path), load_state_dict(out/'motion_module.safetensors')
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert np.array_equal(T.MetricsLog(tmp_path/'straight'/'logs'/'metrics.csv').column('loss'), T.MetricsLog(out/'logs'/'metrics.csv').column('loss'))


@pytest.mark.parametrize('name', ['train_t2v', 'train_t2i', 'train_lora'])
def test_scripts_and_configs_say_the_same(name):
    "Each script and its YAML config in configs/ describe the same run (v1's settings)."
    import argparse, shlex
    text = (REPO/'scripts'/f'{name}.sh').read_text()
    defaults = dict(re.findall(r'^(\w+)=\$\{\w+:?-([^}]*)\}', text, re.M))
    words = shlex.split(text.replace('\\\n', ' '), comments=True)
    args = [re.sub(r'\$(\w+)', lambda m: defaults[m[1]], w) for w in words[words.index('easyanimate.training') + 1:] if w != '$@']
    from_script = T.args_to_config(T.add_train_args(argparse.ArgumentParser()).parse_args(args))
    assert from_script == T.train_config(REPO/'configs'/f'{name}.yaml')


def test_easyanimate_train_command(model_dir, videos, tmp_path, capsys):
    from easyanimate.cli import main as cli
    (tmp_path/'c.yaml').write_text(yaml.safe_dump(config(model_dir, videos, videos/'two.json', tmp_path/'out', max_train_steps=5)))
    assert cli(['train', '--config', str(tmp_path/'c.yaml'), 'max_train_steps=2', '--lora', 'rank=2', 'network_alpha=2']) == 0
    assert T.load_state_dict(tmp_path/'out'/'lora.safetensors') and T.list_checkpoints(tmp_path/'out')[-1].name == 'checkpoint-2'
    assert cli(['train', '--config', str(tmp_path/'c.yaml'), 'rank=0']) == 2
    assert 'rank must be at least 1' in capsys.readouterr().err


def test_bf16_buckets_and_checkpointing_on_wide_videos(model_dir, tmp_path):
    (tmp_path/'videos').mkdir()
    for i in range(2): write_toy_video(tmp_path/'videos'/f'{i}.mp4', n_frames=8, height=36, width=64, seed=i)
    (tmp_path/'meta.json').write_text(json.dumps([{'file_path': f'videos/{i}.mp4', 'text': CAPTIONS[i], 'type': 'video'} for i in range(2)]))
    result = T.train(config(model_dir, tmp_path, tmp_path/'meta.json', tmp_path/'out', mixed_precision='bf16', enable_bucket=True,
                            video_sample_size=64, gradient_checkpointing=True, max_train_steps=3, sanity_check=True))
    assert result.steps == 3 and all(np.isfinite(result.losses))
    assert {Image.open(p).size for p in (tmp_path/'out'/'sanity_check').glob('*.gif')} == {(96, 64)}  # the 0.57 bucket of 64 px
    assert {v.dtype for v in load_state_dict(result.export_path).values()} == {torch.float32}  # AMP keeps fp32 master weights


def test_accelerate_config_examples_parse():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType
    kinds = {f: load_config_from_file(str(REPO/'configs'/f)).distributed_type for f in ('accelerate_multi_gpu.yaml', 'accelerate_deepspeed_zero2.yaml')}
    assert kinds == {'accelerate_multi_gpu.yaml': DistributedType.MULTI_GPU, 'accelerate_deepspeed_zero2.yaml': DistributedType.DEEPSPEED}


def test_tensorboard_gets_the_csv_metrics(model_dir, videos, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out = tmp_path/'out'
    T.train(config(model_dir, videos, videos/'two.json', out, max_train_steps=3, report_to='tensorboard'))
    runs = [EventAccumulator(str(e.parent)).Reload() for e in sorted((out/'logs').rglob('events.out.tfevents.*'))]
    with_loss = [r for r in runs if 'loss' in r.Tags()['scalars']]   # accelerate also writes the hyperparameters as a run of their own
    assert len(with_loss) == 1, [r.Tags() for r in runs]
    scalars = with_loss[0]
    logged = {e.step: e.value for e in scalars.Scalars('loss')}
    csv_rows = T.MetricsLog(out/'logs'/'metrics.csv')
    assert list(logged) == [1, 2, 3]
    np.testing.assert_allclose([logged[s] for s in (1, 2, 3)], csv_rows.column('loss'), rtol=1e-6)
