"""GPU benchmark (run it where a CUDA GPU is available): the PixArt-XL-2-512x512-size video transformer with random
weights, generating 80 frames at 512x512 in bf16 (v1's defaults), with a random T5-XXL-size text encoder and an SD-size
VAE: seconds per denoising step and peak GPU memory, as is, with VAE slicing, with model CPU offload, and with both.

    python bench/bench_gpu.py                  # on a GPU machine: writes bench/results/gpu.{json,md} with the date and device
    python bench/bench_gpu.py --tiny --steps 2 # small random components, on CPU: checks the script itself
"""
import argparse, json, statistics, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, rss_mib, peak_rss_mib, write_result, md_table

T5_XXL = dict(d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64, feed_forward_proj='gated-gelu', vocab_size=32128,
              relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.0, tie_word_embeddings=False)
SD_VAE = dict(in_channels=3, out_channels=3, down_block_types=('DownEncoderBlock2D',) * 4, up_block_types=('UpDecoderBlock2D',) * 4,
              block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, norm_num_groups=32, sample_size=512, scaling_factor=0.18215)
CASES = {'as is': (False, False), 'VAE slicing': (False, True), 'model CPU offload': (True, False), 'CPU offload + VAE slicing': (True, True)}


def build(args, device, dtype):
    import torch
    from diffusers import AutoencoderKL
    from transformers import T5Config, T5EncoderModel
    from easyanimate.tiny import tiny_tokenizer, tiny_config, tiny_text_encoder, tiny_vae
    from easyanimate.pipeline import EasyAnimateV1Pipeline
    from easyanimate.samplers import get_scheduler
    from easyanimate.transformer import Transformer3DModel, PIXART_XL_2_512_CONFIG, V1_ADDITIONAL_KWARGS
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    with torch.device(device):   # random init where the weights will live: fast on a GPU
        if args.tiny:
            t5, vae = tiny_text_encoder(len(tok)), tiny_vae()
            transformer = Transformer3DModel(**tiny_config(sample_size=args.size // 8), **V1_ADDITIONAL_KWARGS)
        else:
            t5 = T5EncoderModel(T5Config(**T5_XXL)).to(dtype)
            vae = AutoencoderKL(**SD_VAE).to(dtype)
            transformer = Transformer3DModel(**PIXART_XL_2_512_CONFIG, **V1_ADDITIONAL_KWARGS).to(dtype)
    pipe = EasyAnimateV1Pipeline(tokenizer=tok, text_encoder=t5.eval(), vae=vae.eval(), transformer=transformer.eval(), scheduler=get_scheduler('Euler A'))
    return pipe.to(device, dtype)


def run_case(pipe, args, device, offload, slicing):
    import torch
    cuda = device.startswith('cuda')
    pipe.to('cpu')
    if offload: pipe.enable_model_cpu_offload(device=device)
    else: pipe.to(device)
    pipe.enable_vae_slicing() if slicing else pipe.disable_vae_slicing()
    if cuda: torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); torch.cuda.empty_cache()
    before = rss_mib()
    stamps = []
    def tick(p, i, t, kw):
        if cuda: torch.cuda.synchronize()
        stamps.append(time.perf_counter()); return kw
    start = time.perf_counter()
    pipe.set_progress_bar_config(disable=True)
    pipe('a big red circle moving right', video_length=args.frames, height=args.size, width=args.size, num_inference_steps=args.steps,
         seed=42, callback_on_step_end=tick, decode_chunk_size=args.decode_chunk)
    if cuda: torch.cuda.synchronize()
    total = time.perf_counter() - start
    steps = [b - a for a, b in zip(stamps, stamps[1:])]
    pipe.remove_all_hooks() if offload else None
    return dict(offload=offload, vae_slicing=slicing, seconds_per_step=statistics.median(steps) if steps else None, total_s=total,
                decode_s=total - (stamps[-1] - start), peak_gib=(torch.cuda.max_memory_allocated() if cuda else (peak_rss_mib() - before) * 2**20) / 2**30)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--frames', type=int, default=80)
    p.add_argument('--size', type=int, default=512)
    p.add_argument('--steps', type=int, default=4, help='denoising steps per case (the median step time is reported)')
    p.add_argument('--decode-chunk', type=int, default=8, help='frames per VAE decode call')
    p.add_argument('--tiny', action='store_true', help='small random components (checks the script on any machine)')
    p.add_argument('--out', default='gpu')
    args = p.parse_args(argv)
    import torch
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cpu' and not args.tiny: raise SystemExit('no CUDA GPU here: this benchmark needs one (or use --tiny to check the script on CPU)')
    if args.tiny: args.frames, args.size = min(args.frames, 8), min(args.size, 64)
    dtype = torch.bfloat16
    info = machine(torch.get_num_threads())
    info['device'] = torch.cuda.get_device_name() if device == 'cuda' else 'CPU (script check)'
    pipe = build(args, device, dtype)
    rows = [dict(case=name, **run_case(pipe, args, device, *flags)) for name, flags in CASES.items()]
    data = dict(machine=info, frames=args.frames, size=args.size, steps=args.steps, dtype='bf16', tiny=args.tiny, rows=rows,
                transformer_params_b=sum(q.numel() for q in pipe.transformer.parameters()) / 1e9)
    head = (f"{'Script check with small random components' if args.tiny else 'PixArt-XL-2-512x512-size video transformer (random weights, ' + format(data['transformer_params_b'], '.2f') + ' B parameters), T5-XXL-size text encoder and SD-size VAE'}; "
            f"{args.frames} frames at {args.size}x{args.size}, bf16, Euler A, on {info['device']}, {info['date']}, torch {info['torch']}.\n\n")
    md = head + md_table(['setting', 'seconds per step', 'VAE decode s', 'peak memory GiB'],
                         [[r['case'], '' if r['seconds_per_step'] is None else f"{r['seconds_per_step']:.2f}", f"{r['decode_s']:.1f}", f"{r['peak_gib']:.1f}"] for r in rows])
    write_result(args.out, data, md)
    print(md)


if __name__ == '__main__':
    main()
