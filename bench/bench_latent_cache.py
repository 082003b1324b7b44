"""Latent-cache benchmark: seconds per training step of the demo recipe's video stages (stage 3, text-to-video; stage 4,
inpaint) without and with `latent_cache_mb`, in the same run, on a small shapes dataset seen for several epochs.

    python bench/bench_latent_cache.py                 # 64 clips, 3 epochs per row, configs/demo_stage{3_video,4_inpaint}.yaml
    python bench/bench_latent_cache.py --clips 32 --epochs 2

Each row trains from the demo base folder (random transformer, the bundled demo model's VAE) with the stage's own config
(batch, frames, mini-batches, masks) and only these changed: data, steps, no checkpoints or validation. The first epoch
fills the cache; later epochs find their frames there. Reported: median seconds per step of the first epoch (step 1 left
out) and of the later ones, and each row's wall time.
"""
import argparse, csv, statistics, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import setup_torch, machine, cpu_name, load_average, write_result, md_table

ROOT = Path(__file__).resolve().parents[1]
STAGES = ('stage3_video', 'stage4_inpaint')


def step_seconds(run) -> list:
    with open(Path(run) / 'logs' / 'metrics.csv', newline='') as f: return [float(r['seconds']) for r in csv.DictReader(f)]


def row(stage, cache_mb, base, meta, steps, out):
    from easyanimate.training import train, train_config
    config = train_config(ROOT / 'configs' / f'demo_{stage}.yaml', pretrained_model_name_or_path=str(base), transformer_path=None,
                          motion_module_path=None, train_data_meta=str(meta), output_dir=str(out), max_train_steps=steps,
                          checkpointing_steps=steps, validation_prompts=[], lr_warmup_steps=1, latent_cache_mb=cache_mb, sanity_check=False)
    start = time.perf_counter()
    train(config)
    return time.perf_counter() - start, step_seconds(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--clips', type=int, default=64, help='training clips (16 frames, 64 px; half of them windows of longer paths)')
    p.add_argument('--epochs', type=int, default=3)
    p.add_argument('--cache-mb', type=float, default=512, help='latent_cache_mb of the cached rows (the demo configs: 512)')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--out', default='latent_cache')
    args = p.parse_args(argv)
    setup_torch(args.threads)
    from diffusers import AutoencoderKL
    from easyanimate.demo_model import save_base_model, DEMO_FRAMES, DEMO_SIZE, DEMO_FPS, WINDOW_P
    from easyanimate.shapes import make_dataset
    from easyanimate.training import train_config
    info = machine(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = save_base_model(tmp / 'base', AutoencoderKL.from_pretrained(ROOT / 'easyanimate' / 'demo_model' / 'vae'))
        meta = make_dataset(tmp / 'data', args.clips, seed=0, n_frames=DEMO_FRAMES, size=DEMO_SIZE, fps=DEMO_FPS, window_p=WINDOW_P)
        for stage in STAGES:
            batch = train_config(ROOT / 'configs' / f'demo_{stage}.yaml').train_batch_size
            per_epoch = args.clips // batch
            for cache_mb in (0, args.cache_mb):
                wall, seconds = row(stage, cache_mb, base, meta, per_epoch * args.epochs, tmp / f'{stage}-{cache_mb}')
                rows.append(dict(stage=stage, latent_cache_mb=cache_mb, batch=batch, steps=len(seconds), wall=wall,
                                 first_epoch=statistics.median(seconds[1:per_epoch]), later=statistics.median(seconds[per_epoch:])))
    info['load_after'] = [round(x, 2) for x in load_average()]
    data = dict(machine=info, clips=args.clips, epochs=args.epochs, rows=rows)
    md = report(data)
    write_result(args.out, data, md)
    print(md)


def report(d):
    m = d['machine']
    head = (f"Latent cache, demo recipe stages on CPU ({cpu_name(m)}, {m['threads']} threads, torch {m['torch']}, {m['date']}; load average "
            f"{m['load_before'][0]:.1f} before, {m['load_after'][0]:.1f} after). {d['clips']} clips of 16 frames at 64x64 px, {d['epochs']} epochs per row; "
            f"median seconds per step in the first epoch (step 1 left out) and in the later ones, where the cache holds every clip.\n\n")
    plain = {r['stage']: r for r in d['rows'] if not r['latent_cache_mb']}
    header = ['stage', 'latent_cache_mb', 'batch', 'steps', 's/step, epoch 1', 's/step, later epochs', 'later epochs vs no cache', 'wall s']
    rows = [[r['stage'], f"{r['latent_cache_mb']:g}", r['batch'], r['steps'], f"{r['first_epoch']:.2f}", f"{r['later']:.2f}",
             f"{plain[r['stage']]['later'] / r['later']:.2f}x", f"{r['wall']:.0f}"] for r in d['rows']]
    return head + md_table(header, rows)


if __name__ == '__main__':
    main()
