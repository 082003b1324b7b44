"End-to-end tests of the training data layer on tiny datasets written by the tests."
import json, sys, warnings
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image

from easyanimate.data import (Sample, SampleKey, VideoImageDataset, BucketBatchSampler, aspect_buckets, load_samples,
                              make_dataloader, write_toy_video, read_video_frames)
from easyanimate.utils import EasyAnimateError


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp('data')
    (d/'videos').mkdir()
    for i in range(4): write_toy_video(d/'videos'/f'{i}.mp4', n_frames=16, height=48, width=64, seed=i)
    write_toy_video(d/'videos'/'short.mp4', n_frames=5, seed=9)
    (d/'videos'/'corrupt.mp4').write_bytes(b'\x00\x01garbage' * 100)
    for i in range(3): Image.fromarray(np.full((30, 40, 3), 60 * i, np.uint8)).save(d/f'img{i}.png')
    return d


def quiet(f, *a, **k):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        return f(*a, **k), [str(x.message) for x in w]


def test_webvid_format(data):
    rows = ['videoid,name,page_dir'] + [f'{i},video {i},p' for i in range(4)]
    (data/'webvid.csv').write_text('\n'.join(rows) + '\n')
    samples = load_samples(data/'videos', data/'webvid.csv', 'webvid')
    assert [s.text for s in samples] == [f'video {i}' for i in range(4)] and all(s.type == 'video' for s in samples)
    ds = VideoImageDataset(samples, video_sample_size=32, video_sample_stride=2, video_sample_n_frames=8)
    batches = list(make_dataloader(ds, BucketBatchSampler(samples, 2, seed=0)))
    assert len(batches) == 2
    b = batches[0]
    assert b['pixel_values'].shape == (2, 8, 3, 32, 32) and b['pixel_values'].dtype == torch.float32
    assert b['pixel_values'].min() >= -1 and b['pixel_values'].max() <= 1 and b['pixel_values'].std() > 0.05
    assert sorted(i for b in batches for i in b['index'].tolist()) == [0, 1, 2, 3]


def test_normal_format_mixed_images_and_videos(data):
    entries = [{'file_path': f'videos/{i}.mp4', 'text': f'v{i}', 'type': 'video'} for i in range(4)]
    entries += [{'file_path': f'img{i}.png', 'text': f'i{i}'} for i in range(3)]  # type defaults to image
    (data/'normal.json').write_text(json.dumps(entries))
    samples = load_samples(data, data/'normal.json')  # auto: .json -> normal
    assert [s.type for s in samples] == ['video'] * 4 + ['image'] * 3
    ds = VideoImageDataset(samples, video_sample_size=32, video_sample_stride=1, video_sample_n_frames=8, image_sample_size=32)
    batches = list(make_dataloader(ds, BucketBatchSampler(samples, 2, seed=3)))
    kinds = sorted((b['type'][0], tuple(b['pixel_values'].shape)) for b in batches)
    assert kinds == [('image', (2, 1, 3, 32, 32)), ('video', (2, 8, 3, 32, 32)), ('video', (2, 8, 3, 32, 32))]
    assert all(len(set(b['type'])) == 1 for b in batches)  # a batch holds one type


def test_imagefolder_format(data):
    folder = data/'folder'/'train'
    folder.mkdir(parents=True)
    for i in range(2): Image.fromarray(np.full((64, 32, 3), 100, np.uint8)).save(folder/f'{i}.jpg')
    (folder/'metadata.jsonl').write_text(''.join(json.dumps({'file_name': f'{i}.jpg', 'text': f'picture {i}'}) + '\n' for i in range(2)))
    samples = load_samples(data/'folder')  # finds train/metadata.jsonl
    assert [s.text for s in samples] == ['picture 0', 'picture 1'] and {s.type for s in samples} == {'image'}
    ds = VideoImageDataset(samples, image_sample_size=16)
    (b,) = list(make_dataloader(ds, BucketBatchSampler(samples, 2)))
    assert b['pixel_values'].shape == (2, 1, 3, 16, 16)


def test_bucketing_groups_aspect_ratios(data):
    for name, (h, w) in {'wide': (36, 64), 'tall': (64, 36)}.items():
        for i in range(4): write_toy_video(data/'videos'/f'{name}{i}.mp4', n_frames=8, height=h, width=w, seed=i)
    samples = [Sample(str(data/'videos'/f'{n}{i}.mp4'), f'{n}', 'video') for n in ('wide', 'tall') for i in range(4)]
    sampler = BucketBatchSampler(samples, 2, seed=0, video_buckets=aspect_buckets(64, 16), video_n_frames=4)
    batches = list(make_dataloader(VideoImageDataset(samples, 64, 1, 4), sampler))
    assert len(batches) == 4
    for b in batches:
        assert len(set(b['text'])) == 1  # never a mix of wide and tall clips
        h, w = b['pixel_values'].shape[-2:]
        assert (h < w) == (b['text'][0] == 'wide') and h % 16 == 0 and w % 16 == 0


def test_bad_videos_are_skipped_and_counted(data):
    samples = [Sample(str(data/'videos'/'0.mp4'), 'ok0', 'video'), Sample(str(data/'videos'/'corrupt.mp4'), 'corrupt', 'video'),
               Sample(str(data/'videos'/'missing.mp4'), 'missing', 'video'), Sample(str(data/'videos'/'short.mp4'), 'short', 'video'),
               Sample(str(data/'videos'/'1.mp4'), 'ok1', 'video')]
    ds = VideoImageDataset(samples, video_sample_size=32, video_sample_stride=1, video_sample_n_frames=8)
    loader = make_dataloader(ds, BucketBatchSampler(samples, 1, seed=0))
    batches, msgs = quiet(list, loader)
    assert len(batches) == 5 and sorted({t for b in batches for t in b['text']}) == ['ok0', 'ok1']
    skipped = {Path(p).name: why for b in batches for p, why in b['skipped']}
    assert set(skipped) == {'corrupt.mp4', 'missing.mp4', 'short.mp4'}
    assert 'cannot be decoded' in skipped['corrupt.mp4'] and 'not found' in skipped['missing.mp4'] and 'too short: 5 frames' in skipped['short.mp4']
    assert any('corrupt.mp4' in m for m in msgs) and any('short.mp4' in m for m in msgs)
    ok = VideoImageDataset(samples[3:4], 32, 1, 8, video_min_frames=1)[0]  # v1's behaviour: repeat frames of short videos
    assert ok['pixel_values'].shape[0] == 8 and not ok['skipped']


def test_all_bad_stops_with_clear_error(data):
    samples = [Sample(str(data/'videos'/'corrupt.mp4'), 'x', 'video'), Sample(str(data/'nothing.mp4'), 'y', 'video')]
    with pytest.raises(EasyAnimateError, match='could not be used'): quiet(VideoImageDataset(samples, 32, 1, 4).__getitem__, 0)


def test_workers_and_resume_position_are_deterministic(data):
    samples = [Sample(str(data/'videos'/f'{i}.mp4'), f'v{i}', 'video') for i in range(4)] + [Sample(str(data/'videos'/'corrupt.mp4'), 'c', 'video')]
    ds = VideoImageDataset(samples, 32, 2, 4, caption_dropout=0.5, seed=7)
    one = list(make_dataloader(ds, BucketBatchSampler(samples, 1, seed=5), num_workers=0))
    two, _ = quiet(list, make_dataloader(ds, BucketBatchSampler(samples, 1, seed=5), num_workers=2))
    assert [b['text'] for b in one] == [b['text'] for b in two]
    assert all(torch.equal(a['pixel_values'], b['pixel_values']) for a, b in zip(one, two))
    assert sum(len(b['skipped']) for b in two) == 1  # the skip is reported from the worker process
    s = BucketBatchSampler(samples, 1, seed=5); s.set_epoch(0, start_batch=3)
    rest = list(make_dataloader(ds, s))
    assert all(torch.equal(a['pixel_values'], b['pixel_values']) for a, b in zip(one[3:], rest)) and len(rest) == len(one) - 3


def test_missing_decord_is_a_clear_error(data, monkeypatch):
    monkeypatch.setitem(sys.modules, 'decord', None)
    with pytest.raises(EasyAnimateError, match='pip install decord'):
        read_video_frames(data/'videos'/'0.mp4', 4, 1, np.random.default_rng(0))
