"""PiT / ViT backbones: equivalence with timm, shapes, gradients, freezing, bad input."""

import math

import pytest
import timm
import torch
from mmdet.registry import MODELS

import pit_det  # noqa: F401  registers PiT / ViT
from pit_det.models import pit as pit_module
from pit_det.models import vit as vit_module

SIZES = [(224, 224), (400, 667), (333, 517), (17, 17)]


def _random_timm(name: str) -> torch.nn.Module:
    model = timm.create_model(name, pretrained=False).eval()
    # timm leaves some tensors at exact constants (LayerNorm 1 / 0, zero biases); perturb
    # everything so a mis-mapped weight cannot go unnoticed.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def _load(model: torch.nn.Module, state: dict, filter_fn) -> torch.nn.Module:
    state = filter_fn(state)
    assert set(state) >= set(model.state_dict()), set(model.state_dict()) - set(state)
    model.load_state_dict({k: state[k] for k in model.state_dict()})
    return model.eval()


@pytest.mark.parametrize('name,distilled', [('pit_s_224', False), ('pit_s_distilled_224', True), ('pit_ti_224', False)])
def test_pit_matches_timm(name, distilled):
    ref = _random_timm(name)
    arch = name.split('_')[1]
    ours = _load(
        MODELS.build(dict(type='PiT', arch=arch, distilled=distilled)),
        ref.state_dict(),
        pit_module.checkpoint_filter_fn,
    )
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = ref.forward_intermediates(x, indices=[0, 1, 2], intermediates_only=True)
        got = ours(x)
    assert len(got) == 3
    for e, g in zip(expected, got):
        assert g.shape == e.shape
        torch.testing.assert_close(g, e, atol=0, rtol=0)  # timm's ops in timm's order: bit for bit


@pytest.mark.parametrize(
    'name,distilled', [('deit_small_patch16_224', False), ('deit_small_distilled_patch16_224', True)]
)
def test_vit_matches_timm(name, distilled):
    ref = _random_timm(name)
    ours = _load(
        MODELS.build(dict(type='ViT', arch='s', distilled=distilled)), ref.state_dict(), vit_module.checkpoint_filter_fn
    )
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = ref.forward_intermediates(
            x, indices=[1, 7, 11], norm=False, output_fmt='NCHW', intermediates_only=True
        )
        got = ours(x)
    assert len(got) == 3
    for e, g in zip(expected, got):
        assert g.shape == e.shape == (2, 384, 14, 14)
        torch.testing.assert_close(g, e, atol=0, rtol=0)  # timm's ops in timm's order: bit for bit


def test_drop_path_and_initialisation_make_timms_random_draws():
    """pit-det's DropPath and its trunc_normal_ (mmengine's) draw as timm's do, so a training run from
    random weights gives what it gave when pit-det used timm's; pit-det itself no longer imports timm
    (test_integration.py)."""
    from mmengine.model.weight_init import trunc_normal_
    from timm.layers import DropPath as TimmDropPath
    from timm.layers import trunc_normal_ as timm_trunc_normal_

    from pit_det.models.layers import DropPath

    x = torch.randn(16, 5, 6)
    ours, theirs = DropPath(0.3).train(), TimmDropPath(0.3).train()
    torch.manual_seed(3)
    dropped = ours(x)
    torch.manual_seed(3)
    assert torch.equal(dropped, theirs(x)) and not torch.equal(dropped, x)  # some dropped, the rest scaled
    assert torch.equal(ours.eval()(x), x)
    torch.manual_seed(4)
    weights = trunc_normal_(torch.empty(1000), std=0.02)
    torch.manual_seed(4)
    assert torch.equal(weights, timm_trunc_normal_(torch.empty(1000), std=0.02))


def test_pit_s_declares_channels_and_strides():
    model = MODELS.build(dict(type='PiT', arch='s'))
    assert model.out_channels == (144, 288, 576)
    assert model.out_strides == (8, 16, 32)
    model = MODELS.build(dict(type='PiT', arch='s', out_indices=(1, 2)))
    assert model.out_channels == (288, 576) and model.out_strides == (16, 32)
    vit = MODELS.build(dict(type='ViT', arch='s'))
    assert vit.out_channels == (384, 384, 384) and vit.out_strides == (16, 16, 16)


@pytest.mark.parametrize('hw', SIZES)
def test_pit_shapes(hw):
    model = MODELS.build(dict(type='PiT', arch='s')).eval()
    H, W = hw
    with torch.no_grad():
        outs = model(torch.randn(1, 3, H, W))
    h, w = math.ceil((H - 16) / 8) + 1, math.ceil((W - 16) / 8) + 1
    for out, c in zip(outs, model.out_channels):
        assert out.shape == (1, c, h, w)
        assert torch.isfinite(out).all()
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    for out, stride in zip(outs, model.out_strides):  # the grid covers the image at ~stride
        assert out.shape[-2] * stride >= H - 16 and out.shape[-1] * stride >= W - 16


@pytest.mark.parametrize('hw', SIZES)
def test_vit_shapes(hw):
    model = MODELS.build(dict(type='ViT', arch='s')).eval()
    H, W = hw
    with torch.no_grad():
        outs = model(torch.randn(1, 3, H, W))
    assert len(outs) == 3
    for out in outs:
        assert out.shape == (1, 384, math.ceil(H / 16), math.ceil(W / 16))
        assert torch.isfinite(out).all()


def test_pos_embed_is_resized_not_cropped():
    """At a non-pretraining size the stored embedding is resampled to the token grid."""
    model = MODELS.build(dict(type='PiT', arch='ti')).eval()
    assert model.pos_embed.shape[-2:] == (27, 27)
    x = torch.randn(1, 3, 400, 667)
    with torch.no_grad():
        base = model(x)[0]
        model.pos_embed.mul_(2)  # a position embedding that is not used would leave outputs unchanged
        assert not torch.allclose(model(x)[0], base)


def _used(name: str, model: torch.nn.Module) -> bool:
    """ViT blocks after the last returned one are skipped in forward by design."""
    return not name.startswith('blocks.') or int(name.split('.')[1]) <= max(model.out_indices)


@pytest.mark.parametrize('cfg', [dict(type='PiT', arch='ti'), dict(type='ViT', arch='ti', out_indices=(1, 3))])
def test_gradients_reach_every_parameter(cfg):
    model = MODELS.build(cfg).train()
    outs = model(torch.randn(2, 3, 96, 128))
    sum(o.square().mean() for o in outs).backward()
    no_grad = [
        n for n, p in model.named_parameters() if _used(n, model) and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert not no_grad
    assert any(n.startswith('blocks.') for n, _ in model.named_parameters()) == (cfg['type'] == 'ViT')


@pytest.mark.parametrize(
    'cfg,frozen_prefixes',
    [
        (dict(type='PiT', arch='ti', frozen_stages=1), ('patch_embed', 'pos_embed', 'cls_token', 'transformers.0.')),
        (
            dict(type='ViT', arch='ti', frozen_stages=2, out_indices=(3,)),
            ('patch_embed', 'pos_embed', 'cls_token', 'blocks.0.', 'blocks.1.'),
        ),
    ],
)
def test_frozen_stages_get_no_gradient(cfg, frozen_prefixes):
    model = MODELS.build(cfg)
    model.train()  # train() must not unfreeze
    for name, module in model.named_modules():
        if name.startswith(frozen_prefixes) and name:
            assert not module.training, name
    sum(o.sum() for o in model(torch.randn(1, 3, 64, 64))).backward()
    for name, p in model.named_parameters():
        frozen = name.startswith(frozen_prefixes)
        if not _used(name, model):
            continue
        assert p.requires_grad != frozen, name
        assert (p.grad is None) == frozen, name


@pytest.mark.parametrize(
    'cfg', [dict(type='PiT', arch='ti', drop_rate=0.0), dict(type='ViT', arch='ti', out_indices=(2,))]
)
def test_activation_checkpointing_is_exact(cfg):
    x = torch.randn(1, 3, 64, 80)
    plain = MODELS.build(cfg).train()
    cp = MODELS.build(dict(cfg, with_cp=True)).train()
    cp.load_state_dict(plain.state_dict())
    grads = []
    for model in (plain, cp):
        out = model(x)
        sum(o.sum() for o in out).backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[1].keys() == grads[0].keys() and len(grads[0]) > 10
    for n in grads[0]:
        assert torch.equal(grads[1][n], grads[0][n]), n  # recomputation repeats the same ops


@pytest.mark.parametrize('type_', ['PiT', 'ViT'])
def test_unknown_arch_is_named(type_):
    with pytest.raises(ValueError, match="'huge'"):
        MODELS.build(dict(type=type_, arch='huge'))


@pytest.mark.parametrize('type_,hw', [('PiT', (15, 300)), ('PiT', (8, 8)), ('ViT', (300, 12))])
def test_input_smaller_than_patch_is_named(type_, hw):
    model = MODELS.build(dict(type=type_, arch='ti')).eval()
    with pytest.raises(ValueError, match=f'{hw[0]}x{hw[1]}'):
        model(torch.randn(1, 3, *hw))


def test_bad_out_indices_and_frozen_stages():
    with pytest.raises(ValueError, match='out_indices'):
        MODELS.build(dict(type='PiT', arch='ti', out_indices=(0, 3)))
    with pytest.raises(ValueError, match='out_indices'):
        MODELS.build(dict(type='ViT', arch='ti', out_indices=(12,)))
    with pytest.raises(ValueError, match='frozen_stages'):
        MODELS.build(dict(type='PiT', arch='ti', frozen_stages=4))


@pytest.mark.parametrize('h,w', [(6, 8), (7, 9), (1, 5), (13, 2)])
def test_halving_pool_equals_ceil_mode_max_pooling(h, w):
    """The pyramid's 0.5x resampler pads odd sides with -inf instead of ceil_mode (which a
    dynamic torch.export cannot trace): the same maxima, shapes and gradients."""
    from pit_det.models.vit_pyramid import HalveMaxPool

    x = torch.randn(2, 3, h, w, requires_grad=True)
    ours, ref = HalveMaxPool()(x), torch.nn.MaxPool2d(2, 2, ceil_mode=True)(x)
    assert ours.shape == ref.shape == (2, 3, -(-h // 2), -(-w // 2)) and torch.equal(ours, ref)
    g = torch.randn_like(ref)
    assert torch.equal(torch.autograd.grad(ours, x, g)[0], torch.autograd.grad(ref, x, g)[0])
