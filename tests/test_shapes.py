"End-to-end checks of the synthetic moving-shapes data: rendering, captions, held-out split, dataset on disk."
import itertools, json
import numpy as np
import pytest
from easyanimate.utils import EasyAnimateError
from easyanimate.shapes import (BACKGROUND, COLOURS, SHAPES, DIRECTIONS, SIZES, SPEEDS, HELD_OUT, ClipSpec, caption,
                                parse_caption, render_clip, centre_track, train_combos, all_combos, make_dataset,
                                read_clip, caption_vocabulary, eval_prompts)


def test_render_is_deterministic_and_moves_as_told():
    for i, d in enumerate(DIRECTIONS):
        spec = ClipSpec('green', SHAPES[i % 3], d, 'small', 'slow', seed=i)
        clip = render_clip(spec)
        assert clip.shape == (16, 64, 64, 3) and clip.dtype == np.uint8
        assert np.array_equal(clip, render_clip(spec))
        step = np.diff(centre_track(spec), axis=0).mean(0)
        assert np.allclose(step, np.array(DIRECTIONS[d]) * SPEEDS['slow'] * 64)
        ys, xs = np.nonzero((clip[-1] != BACKGROUND).any(-1))
        assert 0 < xs.min() and xs.max() < 63 and 0 < ys.min() and ys.max() < 63   # stays in frame


def test_bad_specs_are_explained():
    with pytest.raises(EasyAnimateError, match="unknown shape 'star'"): ClipSpec('red', 'star', 'left')
    with pytest.raises(EasyAnimateError, match="asked for 64"): render_clip(ClipSpec('red', 'circle', 'up'), n_frames=64)
    with pytest.raises(EasyAnimateError, match="not a shapes caption"): parse_caption('red circle')


def test_held_out_split_keeps_every_word_and_pair_in_training():
    train = train_combos()
    assert len(train) + len(HELD_OUT) == len(all_combos()) == 84
    assert {c[0] for c in train} == set(COLOURS) and {c[1] for c in train} == set(SHAPES)
    assert {c[2] for c in train} == set(DIRECTIONS)
    for i, j in itertools.combinations(range(3), 2):
        assert {(h[i], h[j]) for h in HELD_OUT} <= {(c[i], c[j]) for c in train}


def test_dataset_round_trips_through_mp4(tmp_path):
    meta = make_dataset(tmp_path, n_clips=4, seed=1, n_images=2)
    items = json.loads(meta.read_text())
    assert [it['type'] for it in items] == ['video'] * 4 + ['image'] * 2
    vocab = set(caption_vocabulary())
    for it in items:
        words = parse_caption(it['text'])
        assert (words['colour'], words['shape'], words.get('direction')) not in HELD_OUT
        assert set(it['text'].split()) <= vocab
    frames = read_clip(tmp_path / items[0]['file_path']).astype(int)
    words = parse_caption(items[0]['text'])
    # the file is the rendered clip, within one level (x264 lossless 4:4:4; RGB<->YUV rounding only)
    assert frames.shape == (16, 64, 64, 3)
    assert np.abs(frames[0, 0, 0] - BACKGROUND).max() <= 1
    fg = (np.abs(frames - BACKGROUND).max(-1) > 100)
    assert np.abs(np.median(frames[fg], 0) - COLOURS[words['colour']]).max() <= 1
    with pytest.raises(EasyAnimateError, match="already exists"): make_dataset(tmp_path, n_clips=1)
    assert json.loads(meta.read_text()) == items


def test_eval_prompts_are_fixed_and_labelled():
    ps = eval_prompts(5, 3, seed=7)
    assert ps == eval_prompts(5, 3, seed=7)
    assert [p.held_out for p in ps] == [False] * 5 + [True] * 3
    for p in ps:
        assert ((p.colour, p.shape, p.direction) in HELD_OUT) == p.held_out
        assert parse_caption(p.prompt)['direction'] == p.direction
