"""Denoiser benchmark: forward and forward+backward seconds, GFLOP/s against the measured matmul limit, and peak memory,
for EasyAnimate's Transformer3DModel next to the alternatives, all in one run with the same config and random weights.

Rows: ours (fp32; SDPA), ours with naive attention, the pre-optimisation implementation (bench/v1_style: computes the way
EasyAnimate v1 does), diffusers' LatteTransformer3DModel at matched size (a peer video DiT), ours with bf16 weights and
with bf16 autocast, and (--compile) ours under torch.compile. Timing runs every row in one process in interleaved rounds
(the order reversed every other round, medians reported); the matmul limit is measured in the same rounds. Peak memory is
measured per row in a fresh process: the highest resident size during the first call, above the size just before it.

    python bench/bench_transformer.py                   # the table (about 3 minutes on 2 cores)
    python bench/bench_transformer.py --tiny --rounds 1 # seconds: a smoke test of the machinery
"""
import argparse, copy, json, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import choices, cpu_name, setup_torch, rss_mib, peak_rss_mib, load_average, machine, rounds, summary, run_json, write_result, md_table, images_dir

MID_SIZE = dict(num_attention_heads=6, attention_head_dim=64, in_channels=4, out_channels=8, num_layers=4, sample_size=32,
                caption_channels=4096, cross_attention_dim=384)
TINY = dict(num_attention_heads=2, attention_head_dim=32, in_channels=4, out_channels=8, num_layers=1, sample_size=8,
            caption_channels=64, cross_attention_dim=64)
ROWS = {  # name: (model, precision, attention)
    'ours': ('ours', 'fp32', 'SDPA'),
    'ours-naive': ('ours', 'fp32', 'naive'),
    'v1-style': ('v1-style reference', 'fp32', 'SDPA'),
    'latte': ('diffusers Latte', 'fp32', 'SDPA'),
    'ours-bf16': ('ours', 'bf16 weights', 'auto'),
    'ours-autocast': ('ours', 'bf16 autocast', 'auto'),
    'ours-compile': ('ours, torch.compile', 'fp32', 'SDPA'),
}
TRAINED = ('ours', 'ours-naive', 'v1-style', 'latte', 'ours-autocast', 'ours-compile')   # rows also timed forward+backward
DEFAULT_ROWS = ('ours', 'ours-naive', 'v1-style', 'latte', 'ours-bf16', 'ours-autocast')


def geometry(args):
    cfg = TINY if args.tiny else MID_SIZE
    frames, size, tokens = (2, 8, 8) if args.tiny else (args.frames, args.size, 120)
    return cfg, frames, size, tokens


def build(name, args):
    "Model and a (forward, forward+backward) pair of callables for row `name`, on fixed random inputs."
    import torch
    from diffusers.utils import logging
    from easyanimate.transformer import Transformer3DModel, V1_ADDITIONAL_KWARGS
    logging.set_verbosity_error()   # not the dtype-cast advice for from_pretrained
    cfg, frames, size, tokens = geometry(args)
    torch.manual_seed(0)
    if name == 'latte':
        from diffusers import LatteTransformer3DModel
        model = LatteTransformer3DModel(**cfg, patch_size=2, norm_type='ada_norm_single', norm_elementwise_affine=False, norm_eps=1e-6,
                                        activation_fn='gelu-approximate', attention_bias=True, num_embeds_ada_norm=1000, video_length=frames)
    elif name == 'v1-style':
        from v1_style import ReferenceTransformer3DModel
        model = ReferenceTransformer3DModel(**cfg, **V1_ADDITIONAL_KWARGS)
    else:
        model = Transformer3DModel(**cfg, **V1_ADDITIONAL_KWARGS)
        if name == 'ours-naive': model.set_attention_backend('naive')
    if name != 'latte':  # a trained-like motion module (a fresh one is zero at its output)
        for b in model.transformer_blocks: torch.nn.init.normal_(b.attn_temporal.temporal_transformer.proj_out.weight, std=0.02)
    dtype = torch.bfloat16 if name == 'ours-bf16' else torch.float32
    model = model.to(dtype)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, cfg['in_channels'], frames, size, size, generator=g).to(dtype)
    caption = torch.randn(1, tokens, cfg['caption_channels'], generator=g).to(dtype)
    mask = torch.ones(1, tokens); mask[:, tokens // 4:] = 0   # a short prompt, padded like T5's 120 tokens
    t = torch.tensor([500])
    autocast = torch.autocast('cpu', torch.bfloat16, enabled=name == 'ours-autocast')
    net = torch.compile(model) if name == 'ours-compile' else model

    def call():
        # Latte's own pipeline passes no caption mask (its transformer does not repeat one over the frames); same cost either way
        kw = dict(encoder_hidden_states=caption, timestep=t, encoder_attention_mask=None if name == 'latte' else mask)
        with autocast: return net(x, **kw).sample

    def forward():
        model.eval()
        with torch.no_grad(): return call()

    def forward_backward():
        model.train(); model.zero_grad(set_to_none=True)
        call().float().square().mean().backward()

    return model, forward, forward_backward


def memory_worker(args):
    "In a fresh process: peak resident memory of the first call of one row and mode."
    torch = setup_torch(args.threads)
    if args.reuse_memory:
        from easyanimate.performance import reuse_freed_memory; reuse_freed_memory()
    model, fwd, fwdbwd = build(args.row, args)
    before = rss_mib()
    (fwd if args.mode == 'forward' else fwdbwd)()
    print(json.dumps(dict(row=args.row, mode=args.mode, peak_mib=peak_rss_mib() - before)))


def flops(name, args, model, fwd, fwdbwd):
    from easyanimate.performance import transformer_flops, counted_flops
    cfg, frames, size, tokens = geometry(args)
    out = dict(forward=counted_flops(fwd), forward_backward=counted_flops(fwdbwd))
    if name != 'latte': out['analytic_forward'] = transformer_flops(model.config, frames, size, size, caption_tokens=tokens)['total']
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--rounds', type=int, default=3, help='timed rounds (each row once per round, median reported)')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--frames', type=int, default=16)
    p.add_argument('--size', type=int, default=32, help='latent height and width')
    p.add_argument('--rows', default=None, help=f"comma-separated, from {', '.join(ROWS)} (default: {','.join(DEFAULT_ROWS)}; the bf16 ones only where the CPU has bf16 instructions)")
    p.add_argument('--compile', action='store_true', help='add the torch.compile row (compiling takes a minute or two)')
    p.add_argument('--no-memory', action='store_true', help='skip the per-row peak-memory processes')
    p.add_argument('--reuse-memory', action='store_true', help='easyanimate.performance.reuse_freed_memory() in every process')
    p.add_argument('--clock', choices=('wall', 'cpu'), default='wall',
                   help="wall: elapsed time; cpu: this process's CPU time (needs --threads 1; steady on a shared machine)")
    p.add_argument('--tiny', action='store_true', help='a tiny config: checks the machinery in seconds')
    p.add_argument('--out', default='transformer', help='results name under bench/results/ (json and md), or a path')
    p.add_argument('--plot', help="bar chart of the seconds (default: perf_denoiser.png in the docs' images for a named --out, else beside it; '' for none)")
    p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--row', help=argparse.SUPPRESS)
    p.add_argument('--mode', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker: return memory_worker(args)

    if args.clock == 'cpu' and args.threads != 1: p.error('--clock cpu measures one thread: use --threads 1')
    import time
    clock = time.process_time if args.clock == 'cpu' else time.perf_counter
    torch = setup_torch(args.threads)
    from easyanimate.performance import matmul_gflops, reuse_freed_memory
    if args.reuse_memory: reuse_freed_memory()
    info = machine(args.threads)
    names = choices(args.rows, DEFAULT_ROWS, is_bf16=lambda r: 'bf16' in ROWS[r][1]) + (['ours-compile'] if args.compile else [])
    unknown = [r for r in names if r not in ROWS]
    if unknown: p.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    built = {n: build(n, args) for n in names}
    counts = {n: flops(n, args, *built[n]) for n in names if n in ('ours', 'latte')}
    for n in names: counts.setdefault(n, counts['latte'] if n == 'latte' else counts.get('ours') or flops(n, args, *built[n]))
    # the compile row compiles in its warm-up calls; report how long that took
    fns, compile_s = {}, {}
    for n, (model, fwd, fwdbwd) in built.items():
        if n == 'ours-compile':
            import time
            start = time.perf_counter(); fwd(); fwdbwd(); compile_s[n] = time.perf_counter() - start
        fns[(n, 'forward')] = fwd
        if n in TRAINED: fns[(n, 'forward+backward')] = fwdbwd
    n_mm = 256 if args.tiny else 2048
    fns[('matmul', 'fp32')] = lambda: matmul_gflops(torch.float32, n=n_mm, repeat=3, clock=clock)
    precisions = ['fp32'] + (['bf16'] if any('bf16' in ROWS[n][1] for n in names) else [])
    if 'bf16' in precisions: fns[('matmul', 'bf16')] = lambda: matmul_gflops(torch.bfloat16, n=n_mm, repeat=3, clock=clock)
    mm_rates = {k: [] for k in precisions}
    wrapped = {k: (lambda k=k, f=f: mm_rates[k[1]].append(f())) if k[0] == 'matmul' else f for k, f in fns.items()}
    times = rounds(wrapped, args.rounds, clock=clock)
    limit = {k: sorted(v)[len(v) // 2] for k, v in mm_rates.items()}
    rows = []
    for (n, mode), secs in times.items():
        if n == 'matmul': continue
        model = built[n][0]
        work = counts[n]['forward' if mode == 'forward' else 'forward_backward']
        s = summary(secs)
        precision = ROWS[n][1]
        lim = limit['bf16' if 'bf16' in precision else 'fp32']
        rows.append(dict(row=n, model=ROWS[n][0], precision=precision, attention=ROWS[n][2], mode=mode, seconds=s['median'], seconds_min=s['min'],
                         times=s['times'], gflop=work / 1e9, gflops=work / 1e9 / s['median'], limit_gflops=lim,
                         of_limit=work / 1e9 / s['median'] / lim, params_m=sum(p.numel() for p in model.parameters()) / 1e6))
    ref = {r['mode']: r['seconds'] for r in rows if r['row'] == 'v1-style'}
    for r in rows: r['speedup_vs_v1_style'] = ref[r['mode']] / r['seconds'] if r['mode'] in ref else None
    if not args.no_memory:  # after the timings, two processes at a time (memory does not depend on the speed)
        from concurrent.futures import ThreadPoolExecutor
        def peak(r):
            cmd = [sys.executable, __file__, '--worker', '--row', r['row'], '--mode', r['mode'], '--threads', '1',
                   '--frames', str(args.frames), '--size', str(args.size)] + (['--tiny'] if args.tiny else []) + (['--reuse-memory'] if args.reuse_memory else [])
            return run_json(cmd)['peak_mib']
        with ThreadPoolExecutor(2) as pool:
            for r, mib in zip(rows, pool.map(peak, rows)): r['peak_mib'] = mib
    info['load_after'] = [round(x, 2) for x in load_average()]
    cfg, frames, size, tokens = geometry(args)
    data = dict(machine=info, config=cfg, frames=frames, latent_size=size, caption_tokens=tokens, rounds=args.rounds, reuse_memory=args.reuse_memory, clock=args.clock,
                matmul_gflops=mm_rates, matmul_limit=limit, flops=counts, compile_seconds=compile_s, rows=rows)
    md = report(data)
    write_result(args.out, data, md)
    if args.plot != '': plot(data, args.plot or images_dir(args.out) / 'perf_denoiser.png')
    print(md)


def plot(d, path):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows = [r for r in d['rows'] if r['mode'] == 'forward']
    train = {r['row']: r for r in d['rows'] if r['mode'] != 'forward'}
    labels = [f"{r['model']}\n{r['precision']}, {r['attention']}" for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(rows) + 1.4))
    ys = range(len(rows))
    ax.barh([y + 0.2 for y in ys], [r['seconds'] for r in rows], 0.4, label='forward')
    ax.barh([y - 0.2 for y in ys], [train[r['row']]['seconds'] if r['row'] in train else 0 for r in rows], 0.4, label='forward + backward')
    for y, r in zip(ys, rows): ax.text(r['seconds'], y + 0.2, f" {r['seconds']:.2f} s, {100 * r['of_limit']:.0f}% of matmul limit", va='center', fontsize=8)
    cpu, n = d.get('clock') == 'cpu', d['machine']['threads']
    ax.set_yticks(list(ys)); ax.set_yticklabels(labels, fontsize=8); ax.invert_yaxis(); ax.set_xlabel(f"{'CPU ' if cpu else ''}seconds (median)")
    ax.set_title(f"{d['frames']} frames of {d['latent_size']}x{d['latent_size']} latents, {n} CPU thread{'s' if n > 1 else ''}")
    ax.legend(loc='upper center', bbox_to_anchor=(0.5, -0.2), ncol=2)   # below the axis label
    fig.tight_layout(); Path(path).parent.mkdir(parents=True, exist_ok=True); fig.savefig(path, dpi=100); plt.close(fig)


def fmt(x, spec): return '' if x is None else format(x, spec)


def report(d):
    m, c = d['machine'], d['config']
    head = (f"Denoiser on CPU ({cpu_name(m)}, {m['threads']} threads, torch {m['torch']}, {m['date']}; load average {m['load_before'][0]:.1f} before, "
            f"{m['load_after'][0]:.1f} after): {c['num_layers']} blocks, hidden {c['num_attention_heads'] * c['attention_head_dim']} "
            f"({c['num_attention_heads']}x{c['attention_head_dim']}), batch 1, {d['frames']} frames of {d['latent_size']}x{d['latent_size']} latents, "
            f"caption {d['caption_tokens']} x {c['caption_channels']}. Seconds{' of CPU time (one thread)' if d.get('clock') == 'cpu' else ''}: median of {d['rounds']} interleaved rounds (fastest in brackets). "
            "Matmul limit measured in the same rounds: " + ', '.join(f"{k} {v:.0f} GFLOP/s" for k, v in d['matmul_limit'].items())
            + ('; no bf16 rows: this CPU has no bf16 instructions' if m.get('bf16_emulated') and 'bf16' not in d['matmul_limit'] else '')
            + ('; freed memory reused (reuse_freed_memory)' if d['reuse_memory'] else '') + ".\n\n")
    header = ['model', 'precision', 'attention', 'mode', 'seconds', 'GFLOP', 'GFLOP/s', '% of matmul limit', 'vs v1-style', 'peak MiB', 'params M']
    rows = [[r['model'], r['precision'], r['attention'], r['mode'], f"{r['seconds']:.2f} [{r['seconds_min']:.2f}]", f"{r['gflop']:.1f}",
             f"{r['gflops']:.0f}", f"{100 * r['of_limit']:.0f}%", fmt(r['speedup_vs_v1_style'], '.2f') + ('x' if r['speedup_vs_v1_style'] else ''),
             fmt(r.get('peak_mib'), '.0f'), f"{r['params_m']:.1f}"] for r in sorted(d['rows'], key=lambda r: r['mode'] != 'forward')]
    tail = ''
    if d['compile_seconds']: tail = f"\ntorch.compile: {d['compile_seconds']['ours-compile']:.0f} s of compiling in the warm-up calls (not in the timings).\n"
    return head + md_table(header, rows) + tail


if __name__ == '__main__':
    main()
