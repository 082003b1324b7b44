"""Training-step benchmark: seconds per step, samples/s and peak memory of one v1 training step (VAE-encode the clips,
T5-encode the captions, noise, the learned-variance diffusion loss, backward, gradient clipping, AdamW), training the
motion module only or the whole transformer, with and without gradient checkpointing, in float32 and bf16 autocast.

    python bench/bench_training.py                        # the bundled demo model (or a random stand-in of its size)
    python bench/bench_training.py --model path/to/pipeline --batch 2 --frames 16

Each row runs in a fresh process: `--steps` timed steps after one warm-up step (median reported); the peak resident
memory is measured above the size before the first step (the models themselves excluded).
"""
import argparse, json, statistics, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import choices, cpu_name, model_parser, setup_torch, rss_mib, peak_rss_mib, load_average, machine, run_json, write_result, md_table
from bench_pipeline import default_model

MODES = {'motion module': ['attn_temporal'], 'full': ['.']}
CAPTION = 'a big red circle moving right'


def worker(args):
    torch = setup_torch(args.threads)
    from diffusers import AutoencoderKL
    from diffusers.utils import logging
    from transformers import AutoTokenizer, T5EncoderModel
    from easyanimate.transformer import Transformer3DModel
    from easyanimate.training import make_train_scheduler, DiffusionObjective, select_trainable, Trainee, diffusion_loss, encode_latents, tokenize
    logging.set_verbosity_error()
    root = Path(args.model)
    tok, t5 = AutoTokenizer.from_pretrained(root / 'tokenizer'), T5EncoderModel.from_pretrained(root / 'text_encoder').eval()
    vae, transformer = AutoencoderKL.from_pretrained(root / 'vae').eval(), Transformer3DModel.from_pretrained(root / 'transformer')
    t5.requires_grad_(False); vae.requires_grad_(False)
    trainable = select_trainable(transformer, MODES[args.mode])
    if args.checkpointing: transformer.enable_gradient_checkpointing()
    transformer.train()
    trainee = Trainee(transformer)
    params = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-5, betas=(0.9, 0.999), weight_decay=3e-2, eps=1e-10)
    objective = DiffusionObjective(make_train_scheduler())
    g = torch.Generator().manual_seed(0)
    size = args.size or vae.config.sample_size
    pixels = torch.rand(args.batch, args.frames, 3, size, size, generator=g) * 2 - 1
    autocast = torch.autocast('cpu', torch.bfloat16, enabled=args.precision == 'bf16 autocast')

    clock = time.process_time if args.clock == 'cpu' else time.perf_counter

    def step():
        with autocast:
            latents = encode_latents(vae, pixels, 16)
            ids = tokenize(tok, [CAPTION] * args.batch)
            with torch.no_grad(): emb = t5(ids.input_ids, attention_mask=ids.attention_mask)[0]
            t = torch.randint(0, objective.num_train_timesteps, (args.batch,), generator=g)
            terms = diffusion_loss(trainee, objective, latents, t, torch.randn(latents.shape, generator=g),
                                   dict(encoder_hidden_states=emb, encoder_attention_mask=ids.attention_mask))
        terms['loss'].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step(); optimizer.zero_grad(set_to_none=True)

    before = rss_mib()
    step()
    times = []
    for _ in range(args.steps):
        start = clock(); step(); times.append(clock() - start)
    print(json.dumps(dict(mode=args.mode, checkpointing=args.checkpointing, precision=args.precision, seconds=statistics.median(times),
                          seconds_min=min(times), peak_mib=peak_rss_mib() - before, trainable_m=sum(p.numel() for p in params) / 1e6,
                          total_m=sum(p.numel() for p in transformer.parameters()) / 1e6, size=size, tensors=len(trainable))))


def main(argv=None):
    p = model_parser(__doc__.split('\n')[0])
    p.add_argument('--batch', type=int, default=2, help='clips per step (v1 motion-module script: 2)')
    p.add_argument('--frames', type=int, default=16)
    p.add_argument('--size', type=int, help='pixels (default: the VAE sample size)')
    p.add_argument('--steps', type=int, default=3, help='timed steps per row after one warm-up step')
    p.add_argument('--precisions', default=None, help="comma-separated (default: fp32,bf16 autocast; bf16 only where the CPU has bf16 instructions)")
    p.add_argument('--out', default='training')
    p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--mode', help=argparse.SUPPRESS)
    p.add_argument('--checkpointing', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--precision', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.clock == 'cpu' and args.threads != 1: p.error('--clock cpu measures one thread: use --threads 1')
    if args.worker: return worker(args)

    setup_torch(args.threads)
    info = machine(args.threads)
    tmp = None
    if args.model is None:
        tmp = tempfile.TemporaryDirectory(); args.model, model_name = default_model(Path(tmp.name) / 'demo-stand-in')
    else: model_name = str(args.model)
    rows = []
    for precision in choices(args.precisions, ('fp32', 'bf16 autocast')):
        for mode in MODES:
            for ckpt in (False, True):
                cmd = [sys.executable, __file__, '--worker', '--model', str(args.model), '--mode', mode, '--precision', precision,
                       '--threads', str(args.threads), '--batch', str(args.batch), '--frames', str(args.frames), '--steps', str(args.steps), '--clock', args.clock]
                cmd += (['--size', str(args.size)] if args.size else []) + (['--checkpointing'] if ckpt else [])
                rows.append(run_json(cmd))
    info['load_after'] = [round(x, 2) for x in load_average()]
    data = dict(machine=info, model=model_name, batch=args.batch, frames=args.frames, steps=args.steps, rows=rows, clock=args.clock)
    md = report(data)
    write_result(args.out, data, md)
    print(md)
    if tmp: tmp.cleanup()


def report(d):
    m, size = d['machine'], d['rows'][0]['size']
    head = (f"Training on CPU ({cpu_name(m)}, {m['threads']} threads, torch {m['torch']}, {m['date']}; load average {m['load_before'][0]:.1f} before, "
            f"{m['load_after'][0]:.1f} after). Model: {d['model']}; batch {d['batch']} clips of {d['frames']} frames at {size}x{size} px. "
            f"One step: VAE encoding, T5, the v1 loss (MSE + learned-variance VB), backward, clipping, AdamW. {'CPU seconds (one thread): m' if d.get('clock') == 'cpu' else 'M'}edian of {d['steps']} steps after a warm-up (fastest in brackets).\n\n")
    header = ['trains', 'precision', 'gradient checkpointing', 'seconds per step', 'samples/s', 'peak MiB', 'trainable M of']
    rows = [[r['mode'], r['precision'], 'yes' if r['checkpointing'] else 'no', f"{r['seconds']:.2f} [{r['seconds_min']:.2f}]",
             f"{d['batch'] / r['seconds']:.2f}", f"{r['peak_mib']:.0f}", f"{r['trainable_m']:.2f} of {r['total_m']:.2f}"] for r in d['rows']]
    return head + md_table(header, rows)


if __name__ == '__main__':
    main()
