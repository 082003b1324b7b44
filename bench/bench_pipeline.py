"""End-to-end generation benchmark: seconds per clip for every sampler at the default number of steps (fp32 and bf16),
how time and peak memory grow with the number of frames and with the resolution (plots), and how close the bf16 clip is to
the fp32 one (same seed).

    python bench/bench_pipeline.py --model path/to/pipeline   # any pipeline folder
    python bench/bench_pipeline.py                            # the bundled demo model, or while it is not installed a
                                                              # stand-in of its size with random weights

Every scaling point runs in a fresh process (its peak resident memory above the size before the first generation is its
own); per-sampler times run in one process, a one-step warm-up first.
"""
import argparse, json, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import choices, cpu_name, model_parser, setup_torch, rss_mib, peak_rss_mib, load_average, machine, run_json, write_result, md_table, images_dir

PROMPT = 'a big red circle moving right'
CLOCK = time.perf_counter   # time.process_time with --clock cpu


def default_model(folder):
    "The bundled demo model if installed; else save a stand-in with its sizes and random weights to `folder`."
    from easyanimate.cli import demo_model_path
    found = demo_model_path()
    if found is not None and Path(found).is_dir(): return found, 'bundled demo model'
    import torch
    from easyanimate import demo_model as dm
    from easyanimate.pipeline import EasyAnimateV1Pipeline
    from easyanimate.samplers import get_scheduler
    from easyanimate.transformer import Transformer3DModel, V1_ADDITIONAL_KWARGS
    tok = dm.demo_tokenizer()
    torch.manual_seed(0)
    transformer = Transformer3DModel(**dm.DEMO_TRANSFORMER_CONFIG, **V1_ADDITIONAL_KWARGS).eval()   # v1's 4096-row tables: up to 128 frames
    for b in transformer.transformer_blocks: torch.nn.init.normal_(b.attn_temporal.temporal_transformer.proj_out.weight, std=0.02)
    pipe = EasyAnimateV1Pipeline(tokenizer=tok, text_encoder=dm.demo_text_encoder(len(tok)), vae=dm.demo_vae().eval(), transformer=transformer,
                               scheduler=get_scheduler(dm.DEMO_DEFAULTS['sampler']))
    pipe.save_pretrained(folder)
    (Path(folder) / 'easyanimate_defaults.json').write_text(json.dumps(dm.DEMO_DEFAULTS))
    return folder, 'stand-in of the demo model: its sizes, random weights'


def load(model, dtype, sampler=None):
    from diffusers.utils import logging
    from easyanimate.pipeline import load_pipeline
    logging.set_verbosity_error()
    kw = dict(sampler=sampler) if sampler else {}
    pipe = load_pipeline(model, device='cpu', dtype=dtype, **kw)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def clip(pipe, frames, size, steps, guidance=7.0, seed=42):
    "Denoise then decode one clip; seconds of each and the video [3, F, H, W]."
    start = CLOCK()
    latents = pipe(PROMPT, video_length=frames, height=size, width=size, num_inference_steps=steps, guidance_scale=guidance, seed=seed,
                   output_type='latent').videos
    mid = CLOCK()
    video = pipe.decode_latents(latents)
    end = CLOCK()
    return dict(denoise_s=mid - start, decode_s=end - mid, seconds=end - start), video[0]


def set_clock(args):
    global CLOCK
    if args.clock == 'cpu' and args.threads != 1: raise SystemExit('--clock cpu measures one thread: use --threads 1')
    CLOCK = time.process_time if args.clock == 'cpu' else time.perf_counter


def point_worker(args):
    "In a fresh process: one generation at `frames` x `size`, its time and peak memory."
    set_clock(args)
    setup_torch(args.threads)
    pipe = load(args.model, args.dtype)
    before = rss_mib()
    clip(pipe, args.frames, args.size, 1, args.guidance)      # warm-up; its peak equals a longer run's
    t = min((clip(pipe, args.frames, args.size, args.steps, args.guidance)[0] for _ in range(args.rounds)), key=lambda t: t['seconds'])
    print(json.dumps(dict(frames=args.frames, size=args.size, dtype=args.dtype, steps=args.steps, peak_mib=peak_rss_mib() - before, **t)))


def psnr(a, b): return float(10 * __import__('math').log10(1 / max(((a - b) ** 2).mean().item(), 1e-12)))


def frame_strip(videos, labels, path):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    f = videos[0].shape[1]
    idx = sorted({0, f // 2, f - 1})
    fig, axs = plt.subplots(len(videos), len(idx), figsize=(2 * len(idx), 2.1 * len(videos)), squeeze=False)
    for r, (v, lab) in enumerate(zip(videos, labels)):
        for c, i in enumerate(idx):
            axs[r][c].imshow(v[:, i].permute(1, 2, 0).float().clamp(0, 1).numpy()); axs[r][c].set_xticks([]); axs[r][c].set_yticks([])
            if c == 0: axs[r][c].set_ylabel(lab)
            if r == 0: axs[r][c].set_title(f'frame {i}')
    fig.tight_layout(); fig.savefig(path, dpi=100); plt.close(fig)


def scaling_plot(points, key, xlabel, path, title):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.3))
    for dtype in sorted({p['dtype'] for p in points}):
        pts = sorted((p for p in points if p['dtype'] == dtype), key=lambda p: p[key])
        xs = [p[key] for p in pts]
        a.plot(xs, [p['seconds'] for p in pts], 'o-', label=dtype); b.plot(xs, [p['peak_mib'] for p in pts], 'o-', label=dtype)
    secs = 'CPU seconds' if CLOCK is time.process_time else 'seconds'
    for ax, yl in ((a, f"{secs} per clip ({points[0]['steps']} steps + decode)"), (b, 'peak memory above start (MiB)')):
        ax.set_xlabel(xlabel); ax.set_ylabel(yl); ax.set_xscale('log', base=2); ax.grid(alpha=0.3); ax.legend()
        ax.set_xticks([p[key] for p in points]); ax.set_xticklabels([str(p[key]) for p in points])
    fig.suptitle(title); fig.tight_layout(); fig.savefig(path, dpi=100); plt.close(fig)


def main(argv=None):
    p = model_parser(__doc__.split('\n')[0])
    p.add_argument('--steps', type=int, help="denoising steps per clip for the sampler table (default: the model's, else v1's 30)")
    p.add_argument('--guidance', type=float, help="guidance scale (default: the model's, else v1's 7.0)")
    p.add_argument('--frames', type=int, help="frames per clip for the sampler table and the resolution sweep (default: the model's, else v1's 80)")
    p.add_argument('--size', type=int, help='pixel size for the sampler table and the frames sweep (default: the model native size)')
    p.add_argument('--samplers', default='all', help="comma-separated sampler names, or 'all'")
    p.add_argument('--dtypes', default=None, help='comma-separated (default: fp32,bf16; bf16 only where the CPU has bf16 instructions)')
    p.add_argument('--sweep-frames', default='8,16,32,64,128')
    p.add_argument('--sweep-sizes', default='', help='pixel sizes (default: 1, 2, 3 and 4 times the native size)')
    p.add_argument('--sweep-steps', type=int, default=10, help='denoising steps per clip in the sweeps')
    p.add_argument('--rounds', type=int, default=2, help='timed runs of each clip (the fastest is reported: load from other processes only adds time)')
    p.add_argument('--out', default='pipeline', help='result name under bench/results/ (plots go to the docs), or a path (plots go beside it)')
    p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--dtype', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker: return point_worker(args)

    set_clock(args)
    torch = setup_torch(args.threads)
    from easyanimate.samplers import sampler_names, get_scheduler
    info = machine(args.threads)
    images = images_dir(args.out); images.mkdir(parents=True, exist_ok=True)
    tmp = None
    if args.model is None:
        tmp = tempfile.TemporaryDirectory(); args.model, model_name = default_model(Path(tmp.name) / 'demo-stand-in')
    else: model_name = str(args.model)
    from easyanimate.cli import model_defaults
    defaults = model_defaults(args.model)
    args.steps, args.guidance, args.frames = args.steps or defaults['steps'], args.guidance or defaults['guidance'], args.frames or defaults['frames']
    dtypes = choices(args.dtypes, ('fp32', 'bf16'))
    pipes = {d: load(args.model, d) for d in dtypes}
    native = pipes[dtypes[0]].native_size
    size = args.size or native
    samplers = sampler_names() if args.samplers == 'all' else args.samplers.split(',')

    # 1. every sampler at the default steps, fp32 and bf16, in one process
    videos = {}
    for d, pipe in pipes.items(): clip(pipe, args.frames, size, 1, args.guidance)   # warm-up
    runs = {}
    for r in range(args.rounds):   # interleaved rounds, the order reversed every other round; the fastest round is kept
        order = [(name, d) for name in samplers for d in pipes]
        for name, d in (order if r % 2 == 0 else order[::-1]):
            pipes[d].scheduler = get_scheduler(name)
            t, video = clip(pipes[d], args.frames, size, args.steps, args.guidance)
            if (name, d) not in runs or t['seconds'] < runs[name, d]['seconds']: runs[name, d] = t
            if name == samplers[0]: videos[d] = video
    table = [dict(sampler=name, dtype=d, **runs[name, d]) for name in samplers for d in pipes]
    # 2. bf16 against fp32, same seed
    close = None
    if 'fp32' in videos and 'bf16' in videos:
        a, b = videos['fp32'].float(), videos['bf16'].float()
        close = dict(sampler=samplers[0], max_abs_255=float((a - b).abs().max() * 255), mean_abs_255=float((a - b).abs().mean() * 255), psnr_db=psnr(a, b))
        frame_strip([a, b, (a - b).abs() * 10], ['fp32', 'bf16', '|difference| x 10'], images / 'perf_bf16_vs_fp32.png')
    del pipes
    # 3. sweeps, each point in its own process
    sizes = [int(s) for s in args.sweep_sizes.split(',')] if args.sweep_sizes else [native * k for k in (1, 2, 3, 4)]
    def point(frames, px, d):
        cmd = [sys.executable, __file__, '--worker', '--model', str(args.model), '--dtype', d, '--frames', str(frames), '--size', str(px),
               '--steps', str(args.sweep_steps), '--guidance', str(args.guidance), '--threads', str(args.threads), '--rounds', str(args.rounds), '--clock', args.clock]
        return run_json(cmd)
    max_frames = load(args.model, 'fp32').max_frames
    wanted = [int(f) for f in args.sweep_frames.split(',')]
    skipped = [f for f in wanted if f > max_frames]
    by_frames = [point(f, size, d) for f in wanted if f <= max_frames for d in dtypes]
    by_size = [point(args.frames, px, d) for px in sizes for d in dtypes]
    info['load_after'] = [round(x, 2) for x in load_average()]
    scaling_plot(by_frames, 'frames', 'frames per clip', images / 'perf_frames.png', f'{size}x{size} px, {args.sweep_steps} steps')
    scaling_plot(by_size, 'size', 'width = height (px)', images / 'perf_resolution.png', f'{args.frames} frames, {args.sweep_steps} steps')
    data = dict(machine=info, model=model_name, native_size=native, size=size, frames=args.frames, steps=args.steps, guidance=args.guidance,
                samplers=table, bf16_vs_fp32=close, by_frames=by_frames, by_size=by_size, sweep_steps=args.sweep_steps,
                frames_skipped=skipped, max_frames=max_frames, rounds=args.rounds, clock=args.clock)
    md = report(data)
    write_result(args.out, data, md)
    print(md)
    if tmp: tmp.cleanup()


def report(d):
    m = d['machine']
    head = (f"Generation on CPU ({cpu_name(m)}, {m['threads']} threads, torch {m['torch']}, {m['date']}; load average {m['load_before'][0]:.1f} before, "
            f"{m['load_after'][0]:.1f} after). Model: {d['model']}. One clip of {d['frames']} frames at {d['size']}x{d['size']} px, "
            f"{d['steps']} steps, guidance {d['guidance']}, then VAE decoding; {'CPU ' if d.get('clock') == 'cpu' else ''}seconds for one clip, the fastest of {d['rounds']} interleaved rounds.\n\n")
    by = {}
    for r in d['samplers']: by.setdefault(r['sampler'], {})[r['dtype']] = r
    dtypes = sorted({r['dtype'] for r in d['samplers']}, key=lambda x: x != 'fp32')
    header = ['sampler'] + [f'{dt} seconds (denoise + decode)' for dt in dtypes] + (['bf16 speed-up'] if {'fp32', 'bf16'} <= set(dtypes) else [])
    rows = []
    for name, r in by.items():
        row = [name] + [f"{r[dt]['seconds']:.2f} ({r[dt]['denoise_s']:.2f} + {r[dt]['decode_s']:.2f})" for dt in dtypes]
        if {'fp32', 'bf16'} <= set(dtypes): row.append(f"{r['fp32']['seconds'] / r['bf16']['seconds']:.2f}x")
        rows.append(row)
    out = head + md_table(header, rows)
    c = d['bf16_vs_fp32']
    if c: out += (f"\nbf16 against fp32 ({c['sampler']}, same seed): largest pixel difference {c['max_abs_255']:.1f} of 255, mean {c['mean_abs_255']:.2f}, "
                  f"PSNR {c['psnr_db']:.1f} dB.\n")
    for key, label, pts in (('frames', 'frames', d['by_frames']), ('size', 'size (px)', d['by_size'])):
        dts = sorted({p['dtype'] for p in pts}, key=lambda x: x != 'fp32')
        vals = sorted({p[key] for p in pts})
        cell = {(p[key], p['dtype']): p for p in pts}
        out += f"\nScaling with {label} ({d['sweep_steps']} steps + decode, the fastest of {d['rounds']} runs after a warm-up; peak memory above the start):\n\n"
        if key == 'frames' and d['frames_skipped']: out += f"(not run: {d['frames_skipped']} frames, over the model's {d['max_frames']}-row position table)\n\n"
        out += md_table([label] + [f'{dt} seconds' for dt in dts] + [f'{dt} peak MiB' for dt in dts],
                        [[v] + [f"{cell[v, dt]['seconds']:.2f}" for dt in dts] + [f"{cell[v, dt]['peak_mib']:.0f}" for dt in dts] for v in vals])
    return out


if __name__ == '__main__':
    main()
