"""Each Table 5 config as shipped (its own init_cfg, only the weight file's path moved with
--cfg-options as the README says) loads every weight-file layout promised for it."""

from pathlib import Path

import pytest
import timm
import torch
import torchvision
from mmdet.registry import MODELS
from weight_files import perturbed, write

from pit_det.checkpoint import CheckpointError
from pit_det.config import load_config

ROOT = Path(__file__).resolve().parents[1]

# config -> (timm model whose weights are written, layouts promised in the README / config)
PROMISED = {
    'pit_s': ('pit_s_224', ['pit_official', 'pit_official_wrapped', 'timm', 'timm_old_pit', 'safetensors']),
    'vit_s': ('deit_small_patch16_224', ['deit_official', 'timm', 'safetensors']),
    'vit_s_pyramid': ('deit_small_patch16_224', ['deit_official', 'timm', 'safetensors']),
    'r50': ('torchvision_resnet50', ['torchvision']),
}
CASES = [(name, layout) for name, (_, layouts) in PROMISED.items() for layout in layouts]


@pytest.fixture(scope='module')
def source_states():
    """timm-layout (torchvision for ResNet-50) random weights, one set per source model."""
    torch.manual_seed(0)
    states = {
        'pit_s_224': perturbed(timm.create_model('pit_s_224')).state_dict(),
        'deit_small_patch16_224': perturbed(timm.create_model('deit_small_patch16_224')).state_dict(),
        'torchvision_resnet50': perturbed(torchvision.models.resnet50()).state_dict(),
    }
    return states


@pytest.mark.slow
@pytest.mark.parametrize('name,layout', CASES)
def test_shipped_config_loads_promised_weights(tmp_path, source_states, name, layout, mm_log):
    source = PROMISED[name][0]
    path = write(source_states[source], layout, tmp_path)
    cfg = load_config(
        str(ROOT / f'configs/deformable_detr_{name}.py'), cfg_options={'model.backbone.init_cfg.checkpoint': str(path)}
    )
    assert cfg.model.backbone.init_cfg.type == 'Pretrained'  # the config's own init_cfg, not the test's
    model = MODELS.build(cfg.model)
    model.init_weights()

    loaded = model.backbone.state_dict()
    expected = source_states[source]
    compared = [k for k in loaded if k in expected]
    for k in compared:
        assert torch.equal(loaded[k], expected[k]), k
    not_in_file = sorted(set(loaded) - set(expected))
    if name == 'r50':  # mmdet's ResNet has torchvision's names; only the classifier is unused
        assert not_in_file == [] and set(expected) - set(loaded) == {'fc.weight', 'fc.bias'}
    elif name == 'vit_s_pyramid':  # the resamplers are new for detection and keep their init
        assert not_in_file == ['resample.0.bias', 'resample.0.weight']
        assert any('2 not in it keep their own init (added for detection)' in m for m in mm_log)
    else:
        assert not_in_file == []
    assert len(compared) > 100


@pytest.mark.slow
def test_r50_refuses_a_file_whose_weights_it_would_not_load(tmp_path, source_states):
    """mmengine's Pretrained init loads what fits and logs the rest: a PiT file, or a detector's
    checkpoint without the prefix, left the ResNet random. Refused, naming the fix; with the prefix
    the detector's backbone loads."""
    resnet = perturbed(torchvision.models.resnet50()).state_dict()
    files = {
        'pit.pth': source_states['pit_s_224'],
        'detector.pth': {'state_dict': {f'backbone.{k}': v for k, v in resnet.items()}},
    }
    for name, content in files.items():
        torch.save(content, tmp_path / name)
        options = {'model.backbone.init_cfg.checkpoint': str(tmp_path / name)}
        model = MODELS.build(load_config(str(ROOT / 'configs/deformable_detr_r50.py'), cfg_options=options).model)
        with pytest.raises(CheckpointError, match=rf'{tmp_path / name}: \d+ of \d+ backbone tensors did not load'):
            model.init_weights()
    assert 'model.backbone.init_cfg.prefix=backbone.' in str(pytest.raises(CheckpointError, model.init_weights).value)
    options['model.backbone.init_cfg.prefix'] = 'backbone.'
    model = MODELS.build(load_config(str(ROOT / 'configs/deformable_detr_r50.py'), cfg_options=options).model)
    model.init_weights()
    assert torch.equal(model.backbone.conv1.weight, resnet['conv1.weight'])
