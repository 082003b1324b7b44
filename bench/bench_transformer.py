"""Benchmark `Transformer3DModel` on CPU: forward and forward+backward seconds and peak memory, SDPA vs naive attention.

The mid-size configuration: 4 blocks, hidden 384 (6 heads x 64), the v1 motion module (8 heads, 2x2 grid), 16 frames of
32x32 latents (16x16 tokens per frame, 4096 per clip), batch 1, a caption of 120 tokens of width 4096 (T5-XXL's).

Every measurement runs in a fresh subprocess, so its peak memory is its own: the peak resident set size (ru_maxrss) minus
the resident size just before the first call (model, weights and inputs excluded). Times are the median of `--repeat`
calls after one warm-up call. A benchmark, not a test: run it by hand (it takes a few minutes on 2 cores).

    python bench/bench_transformer.py                 # the table for the v1 (motion module) configuration
    python bench/bench_transformer.py --variant selfattentiontemporal --repeat 1
"""
import argparse, json, os, resource, statistics, subprocess, sys, time

MID_SIZE = dict(num_attention_heads=6, attention_head_dim=64, in_channels=4, out_channels=8, num_layers=4, sample_size=32,
                caption_channels=4096, cross_attention_dim=384)


def rss_mib():
    with open('/proc/self/statm') as f: return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def peak_rss_mib(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(args):
    "Run in a worker process: build the model, time one mode with one backend, print a JSON line."
    import torch
    from easyanimate.transformer import Transformer3DModel, V1_ADDITIONAL_KWARGS, V1_LONG_SEQUENCE_KWARGS
    if args.threads: torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    extra = V1_ADDITIONAL_KWARGS if args.variant == 'motionmodule' else V1_LONG_SEQUENCE_KWARGS
    model = Transformer3DModel(**MID_SIZE, **extra)
    model.set_attention_backend(args.backend)
    model.train(args.mode == 'forward+backward')
    x = torch.randn(1, 4, args.frames, args.size, args.size)
    caption, mask, t = torch.randn(1, 120, 4096), torch.ones(1, 120), torch.tensor([500])
    mask[:, 30:] = 0

    def step():
        if args.mode == 'forward':
            with torch.no_grad(): model(x, caption, t, encoder_attention_mask=mask)
        else:
            model.zero_grad(set_to_none=True)
            model(x, caption, t, encoder_attention_mask=mask).sample.square().mean().backward()

    before = rss_mib()
    start = time.perf_counter(); step(); first = time.perf_counter() - start
    peak = peak_rss_mib() - before
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter(); step(); times.append(time.perf_counter() - start)
    print(json.dumps(dict(backend=args.backend, mode=args.mode, seconds=statistics.median(times) if times else first, first_call=first,
                          peak_mib=peak, params_m=sum(p.numel() for p in model.parameters()) / 1e6, threads=torch.get_num_threads())))


def run_worker(args, backend, mode):
    cmd = [sys.executable, __file__, '--worker', '--backend', backend, '--mode', mode, '--repeat', str(args.repeat),
           '--variant', args.variant, '--frames', str(args.frames), '--size', str(args.size), '--threads', str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode: raise SystemExit(f"benchmark worker failed ({backend}, {mode}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--repeat', type=int, default=2, help='timed calls after the warm-up call (median reported)')
    p.add_argument('--variant', default='motionmodule', choices=['motionmodule', 'selfattentiontemporal'])
    p.add_argument('--frames', type=int, default=16)
    p.add_argument('--size', type=int, default=32, help='latent height and width')
    p.add_argument('--threads', type=int, default=0, help='torch threads (0: torch default)')
    p.add_argument('--backends', default='sdpa,naive')
    p.add_argument('--json', help='also write the rows to this JSON file')
    p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--backend', default='sdpa', help=argparse.SUPPRESS)
    p.add_argument('--mode', default='forward', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker: return measure(args)

    rows = [run_worker(args, b, m) for m in ('forward', 'forward+backward') for b in args.backends.split(',')]
    print(f"Transformer3DModel on CPU, {args.variant}: 4 blocks, hidden 384 (6x64), {rows[0]['params_m']:.1f} M parameters, "
          f"batch 1, {args.frames} frames of {args.size}x{args.size} latents ({args.frames * (args.size // 2) ** 2} tokens), "
          f"caption 120 x 4096, fp32, {rows[0]['threads']} threads, median of {args.repeat} after a warm-up")
    print(f"{'mode':<18}{'attention':<11}{'seconds':>9}{'first call':>12}{'peak MiB':>10}")
    for r in rows: print(f"{r['mode']:<18}{r['backend']:<11}{r['seconds']:>9.2f}{r['first_call']:>12.2f}{r['peak_mib']:>10.0f}")
    if args.json:
        with open(args.json, 'w') as f: json.dump(dict(variant=args.variant, frames=args.frames, size=args.size, rows=rows), f, indent=1)


if __name__ == '__main__':
    main()
