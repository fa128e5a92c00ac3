"""``import pit_det`` registers modules and changes nothing else; pit-det's changes to mmengine and
mmdet are made by :func:`pit_det.integration.install`, which the configs' ``custom_imports`` and the
tools' config loader call. Each case runs in a fresh interpreter, as a user's script would."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json
import sys
from mmengine.fileio.backends import backends
from mmengine.runner import CheckpointLoader
from mmdet.apis import DetInferencer
from mmdet.registry import MODELS
{setup}
print(json.dumps(dict(
    loader=CheckpointLoader._schemes.get('', lambda: None).__module__,
    backend=backends['local'].__module__,
    inferencer=DetInferencer._init_pipeline.__module__,
    registered='PitDeformableDETR' in MODELS,
    timm='timm' in sys.modules,  # only the tests need timm: it would add about 1 s to every tool's start
)))
"""


def probe(setup: str) -> dict:
    out = subprocess.run(
        [sys.executable, '-c', PROBE.format(setup=setup)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.splitlines()[-1])


MMDET_OWN = dict(
    timm=False,
    loader='mmengine.runner.checkpoint',
    backend='mmengine.fileio.backends.local_backend',
    inferencer='mmdet.apis.det_inferencer',
)
PIT_DET = dict(
    timm=False,
    loader='pit_det.checkpoint.reading',
    backend='pit_det.checkpoint.writing',
    inferencer='pit_det.inference',
)


def test_importing_pit_det_registers_its_modules_and_changes_nothing_else():
    assert probe('import pit_det') == dict(MMDET_OWN, registered=True)


EXPLICIT = (
    'from pit_det import integration as i\n'
    'assert i.installed(); i.install(); assert i.installed()  # idempotent\n'
    'import pit_det.inference as inf; assert inf._mmdet_init_pipeline.__module__ == "mmdet.apis.det_inferencer"'
)


@pytest.mark.parametrize(
    'setup',
    [
        EXPLICIT,
        'from mmengine.config import Config; Config.fromfile("configs/toy/deformable_detr_pit_s_toy.py")',
        'from pit_det.config import load_config; load_config("configs/toy/deformable_detr_pit_s_toy.py")',
    ],
    ids=['explicit', 'config-custom-imports', 'tools-config-loader'],
)
def test_the_configs_and_the_tools_install_the_safe_reader_atomic_writer_and_loader(setup):
    assert probe(setup) == dict(PIT_DET, registered=True)
