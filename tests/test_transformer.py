"End-to-end checks of easyanimate.transformer: equality with the original v1 code, key layout, loaders."
import json, os
from pathlib import Path
import pytest, torch
from safetensors.torch import load_file
from easyanimate.transformer import Transformer3DModel

ROOT = Path(__file__).resolve().parents[1]


def reference_dir(name='ref_A'):
    "The shared reference tensors: $EASYANIMATE_SHARED, or shared/ beside (CI) or inside the checkout."
    bases = ([Path(os.environ['EASYANIMATE_SHARED'])] if os.environ.get('EASYANIMATE_SHARED') else []) + [ROOT.parent / 'shared', ROOT / 'shared']
    for base in bases:
        d = base / 'spec' / 'reference'
        if (d / f'{name}.safetensors').is_file(): return d
    where = ', '.join(str(b) for b in bases)
    if os.environ.get('CI', '').lower() in ('1', 'true', 'yes'):
        pytest.fail(f"reference {name} not found under {where}: CI must provide shared/spec/reference beside the checkout")
    pytest.skip(f"reference {name} not found under {where} (set EASYANIMATE_SHARED to the shared/ folder)")


@pytest.fixture(scope='module')
def ref_a():
    d = reference_dir()
    ref = load_file(str(d / 'ref_A.safetensors'))
    cfg = json.loads((d / 'ref_A.json').read_text())
    sd = {k[len('state_dict.'):]: v for k, v in ref.items() if k.startswith('state_dict.')}
    return cfg, sd, ref


def ref_model(cfg):
    return Transformer3DModel(**cfg['transformer_config'], **cfg['transformer_additional_kwargs']).eval()


@pytest.mark.parametrize('backend', ['sdpa', 'naive'])
def test_matches_original_v1(ref_a, backend):
    cfg, sd, ref = ref_a
    model = ref_model(cfg)
    model.load_state_dict(sd, strict=True)
    model.set_attention_backend(backend)
    with torch.no_grad():
        out = model(ref['input.hidden_states'], ref['input.encoder_hidden_states'], ref['input.timestep'],
                    added_cond_kwargs={'resolution': None, 'aspect_ratio': None},
                    encoder_attention_mask=ref['input.encoder_attention_mask']).sample
    diff = (out - ref['output.sample']).abs().max().item()
    assert diff < 1e-5, f"max abs diff to the original v1 output: {diff:.3e}"
