"End-to-end tests of the notebook widget `easyanimate.ui.GeneratorUI`, driven from Python as a user would click it."
import base64, contextlib, html, io, shlex, threading, time
from pathlib import Path

import numpy as np
import pytest

from easyanimate import cli
from easyanimate.tiny import save_v1_release
from easyanimate.ui import GeneratorUI, generate_argv
from easyanimate.video_io import read_video

@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path

@pytest.fixture(scope='module')
def release(tmp_path_factory):
    "A tiny look-alike of the v1 release under <tmp>/models/."
    root = tmp_path_factory.mktemp('release')
    return root / 'models', save_v1_release(root)

def small(ui, **changes):
    "Keep runs short: few steps and frames (at the model's own size unless `size` is given)."
    settings = {**dict(prompt="a red circle moving to the right", steps=2, frames=4), **changes}
    for name, value in settings.items(): getattr(ui, name).value = value
    return ui

def run_cli(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()): status = cli.main(argv)
    return status, err.getvalue()

def test_defaults_make_a_playing_video_in_the_background(in_tmp):
    ui = small(GeneratorUI())
    steps, threads = [], set()
    ui.progress.observe(lambda c: (steps.append(c['new']), threads.add(threading.current_thread().name)), 'value')
    ui.generate_button.click()
    assert ui.generate_button.disabled and not ui.stop_button.disabled, 'busy while it runs'
    spins = 0
    while ui._thread.is_alive():   # the caller's thread is free meanwhile: the kernel keeps serving widgets
        ui.seed.value += 1; spins += 1
        time.sleep(0.01)
    path = ui.wait(timeout=120)
    assert spins > 0 and threads == {'easyanimate-ui'}
    assert path == Path('samples/easyanimate-videos/00000001.mp4') and (in_tmp / path).is_file()
    assert steps[-2:] == [1, 2] and ui.progress.max == 2
    assert read_video(path).shape[0] == 4
    b64 = base64.b64encode(path.read_bytes()).decode()
    assert ui.media.value.startswith(f'<video src="data:video/mp4;base64,{b64}" autoplay loop muted playsinline controls style="width: ')
    assert f'href="data:video/mp4;base64,{b64}"' in ui.download.value
    assert ui.saved.value == f'saved {(in_tmp / path)}'
    assert ('bundled demo model not found' in ui.message.value) == (cli.demo_model_path() is None)
    assert 'seed 42' in ui.status.value, 'the seed at the click, not the one typed since'
    assert not ui.generate_button.disabled and ui.stop_button.disabled

def test_a_click_while_busy_is_refused_and_the_result_is_never_mixed(in_tmp):
    ui = small(GeneratorUI(), steps=6)
    ui.generate_button.click()
    first_command = ui.command.value
    ui.prompt.value = 'a blue square'
    ui.generate_button.click(); ui.generate_button.click()
    assert 'still making the previous video' in ui.message.value
    assert ui.command.value == first_command and 'a red circle' in first_command
    first = ui.wait(timeout=120)
    assert sorted(p.name for p in (in_tmp / 'samples' / 'easyanimate-videos').iterdir()) == ['00000001.mp4']
    assert ui.result_path == first and 'a blue square' not in ui.command.value
    ui.generate_button.click()
    assert ui.wait(timeout=120) == first.with_name('00000002.mp4') and 'a blue square' in ui.command.value

@pytest.mark.parametrize('change', [dict(prompt=' '), dict(steps=0), dict(guidance=-2.0), dict(fps=0), dict(frames=0),
                                    dict(size='30x64'), dict(size='wide'), dict(sampler='DPM++', steps=-1), dict(out='out/clip.avi'),
                                    dict(device='cuda:7')])
def test_bad_settings_get_the_command_lines_message_in_the_forms_words(in_tmp, change):
    ui = small(GeneratorUI(run_in_thread=False), **change)
    ui.generate_button.click()
    status, err = run_cli(generate_argv(ui.values()))
    assert status == 2 and err.startswith('easyanimate: error: ')
    said = ui.in_form_words(err.strip().removeprefix("easyanimate: error: "))   # each --option named by its field's label
    assert ui.message.value == f'<span style="color: #b00020">{html.escape(said)}</span>' and '--' not in said
    assert ui.result_path is None and not (in_tmp / 'samples').exists() and not (in_tmp / 'out').exists()
    assert not ui.generate_button.disabled
    ui.generate_button.click()   # and the widget is not stuck
    assert 'still making' not in ui.message.value

def test_picked_models_give_the_same_video_as_the_command_line(in_tmp, release):
    models, files = release
    ui = small(GeneratorUI(models_dir=models, run_in_thread=False), size='64x64', seed=3)
    assert [label for label, _ in ui.base_model.options][1:] == ['PixArt-XL-2-512x512']
    ui.base_model.value = str(files['model'])
    assert ui.negative_prompt.value.startswith('Strange motion trajectory'), "v1's defaults for a v1 model"
    ui.steps.value, ui.frames.value = 2, 4
    ui.motion_module.value, ui.checkpoint.value, ui.lora.value = str(files['motion_module']), str(files['personalized']), str(files['lora'])
    ui.lora_weight.value = 0.8
    ui.generate_button.click()
    assert ui.message.value == '', ui.message.value
    widget_video = ui.result_path
    command = ui.command_line()
    assert f'--transformer-checkpoint={files["personalized"]}' in command and '--lora-weight=0.8' in command
    status, err = run_cli(shlex.split(command)[1:])
    assert status == 0, err
    cli_video = widget_video.with_name('00000002.mp4')
    np.testing.assert_array_equal(read_video(cli_video), read_video(widget_video))
    ui.lora_weight.value = 0.0   # another LoRA weight reloads the model; weight 0 is the model without the LoRA
    ui.generate_button.click()
    assert not np.array_equal(read_video(ui.result_path), read_video(widget_video))

def test_a_models_folder_that_is_missing_or_odd_is_explained(in_tmp, release):
    ui = GeneratorUI(models_dir=in_tmp / 'no_models')
    assert 'no folder' in ui.models_note.value and [v for _, v in ui.base_model.options] == ['']
    models, files = release
    ui.models_dir.value = str(models)
    ui.refresh.click()
    assert [v for _, v in ui.lora.options] == ['', str(files['lora'])]
    assert [v for _, v in ui.checkpoint.options] == ['', str(files['personalized'])]
    assert [v for _, v in ui.motion_module.options] == ['', str(files['motion_module'])]
