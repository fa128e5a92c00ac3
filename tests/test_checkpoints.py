"""Every supported weight-file layout loads through init_cfg and reproduces timm's features."""

import pytest
import timm
import torch
from mmdet.registry import MODELS
from weight_files import perturbed, to_official_pit, write

import pit_det  # noqa: F401
from pit_det.checkpoint import CheckpointError, load_pretrained, read_state_dict
from pit_det.models import pit as pit_module


@pytest.fixture(scope='module')
def timm_pit():
    return perturbed(timm.create_model('pit_s_224', pretrained=False))


@pytest.fixture(scope='module')
def timm_pit_distilled():
    return perturbed(timm.create_model('pit_s_distilled_224', pretrained=False))


@pytest.fixture(scope='module')
def timm_deit():
    return perturbed(timm.create_model('deit_small_patch16_224', pretrained=False))


def _features_of(cfg: dict, path, x: torch.Tensor):
    model = MODELS.build(dict(cfg, init_cfg=dict(type='Pretrained', checkpoint=str(path))))
    model.init_weights()
    with torch.no_grad():
        return model.eval()(x)


def _assert_same(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, atol=0, rtol=0)  # the same weights give the same features


X = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize('layout', ['pit_official', 'pit_official_wrapped', 'timm', 'timm_old_pit', 'safetensors'])
def test_pit_checkpoint_layouts(tmp_path, timm_pit, layout):
    state = timm_pit.state_dict()
    assert 'transformers.1.pool.conv.weight' in state and state['pos_embed'].shape == (1, 144, 27, 27)
    path = write(state, layout, tmp_path)
    with torch.no_grad():
        expected = timm_pit.forward_intermediates(X, indices=[0, 1, 2], intermediates_only=True)
    _assert_same(_features_of(dict(type='PiT', arch='s'), path, X), expected)


def test_pit_official_distilled(tmp_path, timm_pit_distilled):
    path = tmp_path / 'pit_s_distill_819.pth'
    state = to_official_pit(timm_pit_distilled.state_dict())
    assert state['cls_token'].shape == (1, 2, 144) and 'head_dist.weight' in state
    torch.save(state, path)
    with torch.no_grad():
        expected = timm_pit_distilled.forward_intermediates(X, indices=[0, 1, 2], intermediates_only=True)
    _assert_same(_features_of(dict(type='PiT', arch='s', distilled=True), path, X), expected)
    with pytest.raises(CheckpointError, match='distilled'):  # a distilled file into a plain model
        _features_of(dict(type='PiT', arch='s'), path, X)


@pytest.mark.parametrize('layout', ['deit_official', 'timm', 'mmengine_detector'])
def test_vit_checkpoint_layouts(tmp_path, timm_deit, layout):
    state = timm_deit.state_dict()
    if layout == 'mmengine_detector':  # backbone weights under 'backbone.' in 'state_dict'
        path = tmp_path / 'detector.pth'
        torch.save(
            {
                'meta': {},
                'state_dict': {**{f'backbone.{k}': v for k, v in state.items()}, 'bbox_head.fc.weight': torch.zeros(3)},
            },
            path,
        )
    else:
        path = write(state, layout, tmp_path)
    with torch.no_grad():
        expected = timm_deit.forward_intermediates(X, indices=[1, 7, 11], norm=False, intermediates_only=True)
    _assert_same(_features_of(dict(type='ViT', arch='s'), path, X), expected)


def test_missing_keys_are_named(tmp_path, timm_pit):
    state = to_official_pit(timm_pit.state_dict())
    del state['pools.1.fc.weight'], state['transformers.2.blocks.3.mlp.fc2.bias']
    path = tmp_path / 'broken.pth'
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        _features_of(dict(type='PiT', arch='s'), path, X)
    assert 'transformers.2.pool.fc.weight' in str(err.value)
    assert 'transformers.2.blocks.3.mlp.fc2.bias' in str(err.value)
    assert str(path) in str(err.value)


def test_unexpected_keys_are_listed(tmp_path, timm_pit, capsys):
    path = tmp_path / 'extra.pth'
    torch.save({**timm_pit.state_dict(), 'aux_head.weight': torch.zeros(2)}, path)
    model = MODELS.build(dict(type='PiT', arch='s'))
    load_pretrained(model, path, pit_module.checkpoint_filter_fn, logger=None)
    out = capsys.readouterr().out
    assert 'aux_head.weight' in out and 'head.weight' in out


class _Payload:
    def __reduce__(self):
        return (print, ('this would have run',))


def test_pickle_with_code_is_refused(tmp_path, capsys):
    path = tmp_path / 'evil.pth'
    torch.save({'pos_embed': torch.zeros(1), 'payload': _Payload()}, path)
    capsys.readouterr()
    with pytest.raises(CheckpointError, match='refused: it needs the global builtins.print,') as err:
        read_state_dict(path)
    assert str(path) in str(err.value)
    assert 'this would have run' not in capsys.readouterr().out


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        read_state_dict(tmp_path / 'nope.pth')
    bad = tmp_path / 'garbage.pth'
    bad.write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointError, match='garbage.pth'):
        read_state_dict(bad)
