"""Step-cache benchmark on the bundled demo model (16-frame clips at its defaults): for every diffusers cache method at a few
settings, seconds per clip (interleaved with the uncached clip, in one process), the share of the transformer's
matrix-product work skipped, `evaluate-demo` colour+direction over its 28 prompts, and PSNR of those clips against the
uncached ones (same prompts and seeds); a speed-against-quality plot; the `auto` choice; and the uncached forward of this
checkout against the forward of another git revision (default `main`), also interleaved in this process.

    python bench/bench_step_cache.py                 # writes bench/results/step_cache.{json,md} and nbs/images/step_cache.png
    python bench/bench_step_cache.py --write-auto    # also stores the chosen `auto` in the demo model's defaults (model_index.json)

`auto` is the fastest setting whose colour+direction is at most one prompt below the uncached clips' and whose PSNR
against them is at least --min-psnr dB.
"""
import argparse, importlib.util, json, subprocess, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, cpu_name, images_dir, machine, md_table, rounds, setup_torch, summary, write_result

CALIBRATION_PROMPTS = ['a big red circle moving right', 'a small blue square moving up', 'a big yellow triangle moving left',
                       'a small white triangle moving down']
TIMING_PROMPT = 'a big red circle moving right'


def settings(ratios):
    "Every (label, setting) compared: each method at a few values of its main knob."
    mag = lambda t: dict(method='magcache', threshold=t, mag_ratios=ratios)
    return ([(f'fbc {t}', dict(method='fbc', threshold=t)) for t in (0.05, 0.2, 0.4)]
            + [(f'magcache {t}', mag(t)) for t in (0.1, 0.3, 0.6)]
            + [(f'pab {n}', dict(method='pab', interval=n)) for n in (2, 3)]
            + [(f'fastercache {n}', dict(method='fastercache', interval=n)) for n in (3, 5)]
            + [(f'taylorseer {n}', dict(method='taylorseer', interval=n)) for n in (3, 4, 5)])


def load_baseline(ref, folder):
    "The `easyanimate` package of git revision `ref`, imported as `easyanimate_baseline` (its modules import each other relatively)."
    tar = subprocess.run(['git', '-C', str(ROOT), 'archive', ref, 'easyanimate'], capture_output=True, check=True).stdout
    subprocess.run(['tar', '-x', '-C', str(folder)], input=tar, check=True)
    init = Path(folder) / 'easyanimate' / '__init__.py'
    spec = importlib.util.spec_from_file_location('easyanimate_baseline', init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules['easyanimate_baseline'] = module
    spec.loader.exec_module(module)
    return importlib.import_module('easyanimate_baseline.transformer')


def forward_vs_baseline(pipe, ref, repeat, kw, clock):
    "Seconds per uncached transformer forward (the demo clip's batch) of this checkout and of revision `ref`, same weights."
    import torch
    with tempfile.TemporaryDirectory() as tmp:
        base = load_baseline(ref, tmp)
        ours = pipe.transformer
        theirs = base.Transformer3DModel(**{k: v for k, v in ours.config.items() if not k.startswith('_')}).eval()
        theirs.load_state_dict(ours.state_dict())
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, ours.config.in_channels, kw['video_length'], 8, 8, generator=g)   # 12 for an inpaint model: its latents and inpaint latents in one tensor
        ctx = torch.randn(2, 120, ours.config.caption_channels, generator=g)
        mask, t = torch.ones(2, 120, dtype=torch.long), torch.tensor([500, 500])
        with torch.no_grad():
            same = torch.equal(ours(x, ctx, t, encoder_attention_mask=mask).sample, theirs(x, ctx, t, encoder_attention_mask=mask).sample)
            times = rounds({'this checkout': lambda: ours(x, ctx, t, encoder_attention_mask=mask),
                            ref: lambda: theirs(x, ctx, t, encoder_attention_mask=mask)}, repeat, warmup=3, clock=clock)
    commit = subprocess.run(['git', '-C', str(ROOT), 'rev-parse', '--short', ref], capture_output=True, text=True).stdout.strip()
    return dict(ref=ref, commit=commit, bit_identical=same, **{k: summary(v) for k, v in times.items()})


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--clock', choices=('wall', 'cpu'), default='cpu',
                   help="cpu (default): this process's CPU time, steady on a machine shared with other jobs (needs --threads 1); wall: elapsed time")
    p.add_argument('--repeat', type=int, default=5, help='interleaved timing rounds per setting')
    p.add_argument('--seen', type=int, default=16, help='evaluate-demo prompts of seen combinations')
    p.add_argument('--held-out', type=int, default=12, help='evaluate-demo prompts of held-out combinations')
    p.add_argument('--min-psnr', type=float, default=35.0, help='lowest PSNR (dB, against the uncached clips) `auto` may have')
    p.add_argument('--baseline', default='main', help='git revision whose uncached forward is timed beside this checkout')
    p.add_argument('--write-auto', action='store_true', help="store the chosen setting as `cache` in the demo model's defaults file")
    p.add_argument('--out', default='step_cache', help='result name (bench/results/NAME) or a path')
    args = p.parse_args()
    if args.clock == 'cpu' and args.threads != 1: raise SystemExit('--clock cpu needs --threads 1')
    clock = time.process_time if args.clock == 'cpu' else time.perf_counter
    torch = setup_torch(args.threads)
    import numpy as np
    from diffusers.utils import logging
    from easyanimate.cli import demo_model_path
    from easyanimate.pipeline import model_defaults
    from easyanimate.evaluate import evaluate, pipeline_generate_fn
    from easyanimate.performance import counted_flops
    from easyanimate.pipeline import load_pipeline
    from easyanimate.shapes import eval_prompts
    from easyanimate.step_cache import calibrate_magcache, resolve_cache
    logging.set_verbosity_error()
    model = demo_model_path()
    if model is None: raise SystemExit('the bundled demo model is not installed')
    d = model_defaults(model)
    pipe = load_pipeline(model, sampler=d['sampler'], dtype='fp32', device='cpu')
    pipe.set_progress_bar_config(disable=True)
    kw = dict(negative_prompt=d['negative_prompt'], video_length=d['frames'], num_inference_steps=d['steps'], guidance_scale=d['guidance'])
    info = machine(args.threads)
    started = time.perf_counter()

    start = time.perf_counter()
    ratios = calibrate_magcache(pipe, CALIBRATION_PROMPTS, **kw)
    calibration_s = time.perf_counter() - start
    table = [('off', None)] + settings(ratios)

    def clip(cache, prompt=TIMING_PROMPT, **extra):
        pipe.step_cache = resolve_cache(cache)
        return pipe(prompt, seed=42, **kw, **extra)

    times = rounds({label: (lambda c=cache: clip(c)) for label, cache in table}, args.repeat, clock=clock)
    text_flops = counted_flops(pipe.encode_prompt, TIMING_PROMPT, kw['negative_prompt'], True)
    flops = {label: counted_flops(clip, cache, output_type='latent') - text_flops for label, cache in table}

    prompts = eval_prompts(args.seen, args.held_out)
    rows, clips = [], {}
    eval_start = time.perf_counter()
    for label, cache in table:
        pipe.step_cache = resolve_cache(cache)
        made = []
        gen = pipeline_generate_fn(pipe, steps=kw['num_inference_steps'], guidance=kw['guidance_scale'], n_frames=kw['video_length'], size=pipe.native_size)
        report = evaluate(lambda prompt, seed: made.append(gen(prompt, seed)) or made[-1], prompts, verbose=False)
        clips[label] = np.stack(made).astype(np.float64) / 255
        mse = ((clips[label] - clips['off']) ** 2).reshape(len(made), -1).mean(1)
        psnrs = [10 * np.log10(1 / m) if m > 0 else 100.0 for m in mse]
        psnr = float(np.mean(psnrs))
        both = sum(r['both_ok'] for r in report['clips'])
        t = statistics_median(times[label])
        rows.append(dict(label=label, cache=cache, seconds=t, speedup=statistics_median(times['off']) / t,
                         skipped=1 - flops[label] / flops['off'], both_ok=both, n=len(prompts), psnr=psnr, psnr_min=float(min(psnrs)),
                         times=[round(s, 4) for s in times[label]]))
        print(f"{label:16s} {t:6.3f} s  x{rows[-1]['speedup']:.2f}  skipped {rows[-1]['skipped']:5.1%}  colour+direction {both}/{len(prompts)}  PSNR {psnr:6.1f} dB", flush=True)
    eval_s = time.perf_counter() - eval_start

    off = rows[0]
    ok = [r for r in rows[1:] if r['both_ok'] >= off['both_ok'] - 1 and r['psnr'] >= args.min_psnr]
    auto = max(ok, key=lambda r: r['speedup']) if ok else None
    try: forward = forward_vs_baseline(pipe, args.baseline, 30, kw, clock)
    except subprocess.CalledProcessError: forward = None   # no such revision here (a copy without git history)
    result = dict(machine=info, model='bundled demo model', settings=kw, threads=args.threads, clock=args.clock, repeat=args.repeat, calibration_ratios=ratios,
                  calibration_seconds=calibration_s, evaluation_seconds=eval_s, total_seconds=time.perf_counter() - started,
                  rows=rows, auto=auto and auto['label'], auto_setting=auto and auto['cache'], forward=forward, min_psnr=args.min_psnr)
    md = md_table(['setting', 's / clip', 'speed-up', 'work skipped', 'colour+direction', 'PSNR vs off (dB)'],
                  [[r['label'] + (' (auto)' if auto and r is auto else ''), f"{r['seconds']:.3f}", f"{r['speedup']:.2f}x", f"{r['skipped']:.0%}",
                    f"{r['both_ok']}/{r['n']}", '-' if r is off else f"{r['psnr']:.1f}"] for r in rows])
    write_result(args.out, result, md)
    plot(rows, auto, images_dir(args.out) / f'{Path(args.out).stem}.png', cpu_name(info))
    if args.write_auto and auto:
        f = Path(model) / 'model_index.json'   # the folder's defaults live there, beside its components
        index = json.loads(f.read_text())
        index['defaults'] = {**index.get('defaults', {}), 'cache': {**auto['cache'], 'mag_ratios': ratios}}   # the ratios travel with it: `--cache magcache` uses them too
        f.write_text(json.dumps(index, indent=2) + '\n')
    print(md)
    print(f"auto: {result['auto']}; uncached forward against {args.baseline}: {forward and {k: v['median'] for k, v in forward.items() if isinstance(v, dict)}}")


def statistics_median(xs):
    import statistics
    return statistics.median(xs)


def plot(rows, auto, path, cpu):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.2))
    methods = sorted({r['label'].split()[0] for r in rows[1:]})
    for i, m in enumerate(methods):
        rs = [r for r in rows[1:] if r['label'].split()[0] == m]
        ax.plot([r['speedup'] for r in rs], [r['psnr'] for r in rs], 'o-', color=f'C{i}', label=m)
        for r in rs: ax.annotate(f"{r['label'].split()[1]} ({r['both_ok']}/{r['n']})", (r['speedup'], r['psnr']), fontsize=7,
                                 xytext=(4, 3), textcoords='offset points')
    if auto: ax.plot([auto['speedup']], [auto['psnr']], 'k*', ms=14, label='auto')
    ax.axvline(1.8, color='grey', ls=':', lw=1)
    ax.set_xlabel('speed-up over the uncached clip'); ax.set_ylabel('PSNR against the uncached clip (dB)')
    ax.set_title(f'Step caching on the demo model (16 frames, its defaults)\n{cpu}; in brackets: colour+direction of {rows[0]["n"]} prompts (off: {rows[0]["both_ok"]})', fontsize=9)
    ax.legend(fontsize=8); fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)


if __name__ == '__main__':
    main()
