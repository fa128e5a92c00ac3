"""No file runs code: every checkpoint, the run's own included, is read weights-only; mmengine's
message hub is rebuilt from plain numbers; the resume lookup trusts no pointer out of the work dir."""

import os
import pickle
import shutil
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner import CheckpointLoader

import pit_det.integration  # noqa: F401  installs the safe loader in mmengine, as the configs do
from pit_det.checkpoint import CheckpointError, find_resumable_checkpoint, safe_torch_load

ROOT = Path(__file__).resolve().parents[1]


def mmengine_checkpoint(path: Path) -> None:
    """What mmengine's CheckpointHook saves: weights plus a pickled message hub, meta and schedulers."""
    buf = HistoryBuffer()
    for v in (1.5, 2.5, 4.0):
        buf.update(v)
    torch.save(
        {
            'meta': {'epoch': 3, 'seed': 7, 'dataset_meta': {'classes': ('a', 'b')}},
            'state_dict': {'w': torch.ones(2)},
            'message_hub': {
                'log_scalars': {'train/loss': buf},
                'runtime_info': {'x': np.float64(0.5), 'n': np.int64(3), 'arr': np.arange(3)},
            },
            'optimizer': {'state': {}, 'param_groups': [{'lr': 1e-4, 'betas': (0.9, 0.999)}]},
            'param_schedulers': [{'milestones': Counter({40: 1}), 'gamma': 0.1}],
        },
        path,
    )


class Payload:
    """Unpickling it would create the folder ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


class _Call:
    """Pickles as ``fn(*args)``."""

    def __init__(self, fn, args) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def crafted_checkpoint(path: Path, marker: Path) -> Path:
    """A checkpoint that looks like mmengine's but carries code in its meta."""
    torch.save({'meta': {'epoch': 1, 'seed': 0, 'note': Payload(marker)}, 'state_dict': {'w': torch.ones(1)}}, path)
    return path


def test_mmengine_checkpoint_is_read_weights_only_with_a_working_message_hub(tmp_path):
    path = tmp_path / 'epoch_3.pth'
    mmengine_checkpoint(path)
    methods = dict(HistoryBuffer._statistics_methods)
    ckpt = CheckpointLoader.load_checkpoint(str(path), map_location='cpu')  # mmengine's own entry point
    torch.testing.assert_close(ckpt['state_dict']['w'], torch.ones(2))
    buf = ckpt['message_hub']['log_scalars']['train/loss']
    assert type(buf) is HistoryBuffer and buf.mean() == pytest.approx(8 / 3) and buf.current() == 4.0
    assert buf.data[1].tolist() == [1, 1, 1]  # the counts came back too
    assert ckpt['message_hub']['runtime_info']['x'] == 0.5 and ckpt['param_schedulers'][0]['milestones'] == {40: 1}
    assert HistoryBuffer._statistics_methods == methods  # the class's shared state is untouched


def _rename_globals(path: Path, old: bytes, new: bytes) -> None:
    """Rewrite the pickle inside a torch zip, e.g. numpy 2 module names to numpy 1's."""
    with zipfile.ZipFile(path) as z:
        entries = [(info.filename, z.read(info.filename)) for info in z.infolist()]
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as z:
        for name, data in entries:
            z.writestr(name, data.replace(old, new) if name.endswith('data.pkl') else data)


def test_an_empty_history_buffer_loads_and_bytes_builds_nothing_else(tmp_path):
    path = tmp_path / 'empty.pth'
    torch.save({'message_hub': {'log_scalars': {'loss': HistoryBuffer()}}}, path)  # empty arrays: bytes()
    buf = safe_torch_load(path)['message_hub']['log_scalars']['loss']
    assert type(buf) is HistoryBuffer and len(buf.data[0]) == 0
    torch.save({'x': _Call(bytes, (10**9,))}, path)  # bytes(n) would allocate n bytes
    with pytest.raises(CheckpointError, match=r'bytes\(1000000000,\) is not allowed'):
        safe_torch_load(path)


def test_checkpoints_written_under_numpy_1_load(tmp_path):
    path = tmp_path / 'numpy1.pth'
    mmengine_checkpoint(path)
    _rename_globals(path, b'numpy._core.multiarray', b'numpy.core.multiarray')
    with zipfile.ZipFile(path) as z:
        assert b'numpy.core.multiarray' in z.read(next(n for n in z.namelist() if n.endswith('data.pkl')))
    assert safe_torch_load(path)['message_hub']['runtime_info']['x'] == 0.5


def test_a_global_outside_the_allowlist_is_named_and_never_runs(tmp_path):
    marker = tmp_path / 'code_ran'
    path = crafted_checkpoint(tmp_path / 'epoch_1.pth', marker)
    with pytest.raises(CheckpointError) as err:
        CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    assert str(err.value).startswith(f'{path}: refused: it needs the global posix.mkdir')
    assert not marker.exists()


@pytest.mark.parametrize(
    'protocol,needs',
    [(0, 'the pickle opcode DICT (100)'), (2, 'the global posix.mkdir'), (4, 'the pickle opcode FRAME (149)')],
)
def test_a_pickle_from_pythons_own_pickle_is_refused_and_never_runs(tmp_path, protocol, needs):
    """``pickle.dump(obj, f)`` (protocol 4 by default, its first opcode FRAME) or an old protocol-0
    file (its first opcode DICT): the weights-only unpickler stops at an opcode it lacks before it
    reaches the code; the file is a pickle, refused as one, not called unreadable."""
    marker = tmp_path / 'code_ran'
    path = tmp_path / 'model.pth'
    path.write_bytes(pickle.dumps({'state_dict': Payload(marker)}, protocol=protocol))
    with pytest.raises(CheckpointError) as err:
        safe_torch_load(path)
    assert str(err.value).startswith(f'{path}: refused: it needs {needs}, which is not on'), err.value
    assert not marker.exists()


@pytest.mark.parametrize(
    'content,reason',
    [
        (b'x', 'Unsupported operand 120'),
        (b'{"not": "a checkpoint"}', 'Unsupported operand 123'),
        (b'epoch 1\n', 'pop from empty list'),  # 'e' is an opcode: APPENDS on an empty stack
    ],
)
def test_bytes_that_are_no_pickle_are_named_unreadable_not_unsafe(tmp_path, content, reason):
    """A text file or a stray byte given as a checkpoint: the weights-only unpickler stops at its first
    byte, which is no global to allow (it was reported as one: 'it needs Unsupported operand 120,
    which is not on pit-det's allowlist')."""
    path = tmp_path / 'model.pth'
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        safe_torch_load(path)
    assert str(err.value) == f'{path}: not a readable PyTorch checkpoint ({reason})'


@pytest.mark.parametrize('owner,name', [(np.ndarray, 'tofile'), (HistoryBuffer, '__init__; import os')])
def test_getattr_is_only_for_history_buffer_statistics(tmp_path, owner, name):
    path = tmp_path / 'getattr.pth'
    torch.save({'x': _Call(getattr, (owner, name))}, path)
    with pytest.raises(CheckpointError, match='getattr'):
        safe_torch_load(path)


@pytest.mark.parametrize(
    'field,value,reason',
    [
        ('_log_history', ['a', 'list'], 'HistoryBuffer holds something other than numbers'),
        ('max_length', 'many', 'HistoryBuffer holds something other than numbers'),
        ('_log_history', np.array(['not', 'numbers']), r"but got <class 'numpy.dtypes.StrDType'>"),
    ],
)  # torch's own check
def test_a_history_buffer_holding_other_things_is_refused(tmp_path, field, value, reason):
    buf = HistoryBuffer()
    buf.update(1.0)
    setattr(buf, field, value)
    path = tmp_path / 'hub.pth'
    torch.save({'message_hub': {'log_scalars': {'loss': buf}}}, path)
    with pytest.raises(CheckpointError, match=reason):
        safe_torch_load(path)


def test_last_checkpoint_pointing_out_of_the_work_dir_is_refused(tmp_path):
    work, elsewhere = tmp_path / 'work', tmp_path / 'downloads'
    work.mkdir(), elsewhere.mkdir()
    mmengine_checkpoint(work / 'epoch_1.pth')
    mmengine_checkpoint(elsewhere / 'epoch_9.pth')
    (work / 'last_checkpoint').write_text(str(elsewhere / 'epoch_9.pth'))
    with pytest.raises(CheckpointError) as err:
        find_resumable_checkpoint(str(work))
    assert str(work / 'last_checkpoint') in str(err.value) and str(elsewhere / 'epoch_9.pth') in str(err.value)
    # A link inside the work dir that resolves outside it is the same pointer.
    (work / 'epoch_5.pth').symlink_to(elsewhere / 'epoch_9.pth')
    (work / 'last_checkpoint').write_text(str(work / 'epoch_5.pth'))
    with pytest.raises(CheckpointError, match='outside the work dir'):
        find_resumable_checkpoint(str(work))


def test_a_work_dir_moved_elsewhere_resumes_from_its_own_copy_of_the_named_checkpoint(tmp_path):
    """mmengine's ``last_checkpoint`` holds an absolute path: a run copied to new scratch space
    named its old place, and ``--resume`` refused it as outside the work dir."""
    old, new = tmp_path / 'old' / 'work', tmp_path / 'new' / 'work'
    old.mkdir(parents=True)
    for epoch in (1, 2):
        mmengine_checkpoint(old / f'epoch_{epoch}.pth')
    os.utime(old / 'epoch_2.pth', (1, 1))  # the newest by time is not the one named
    (old / 'last_checkpoint').write_text(str(old / 'epoch_2.pth'))
    shutil.copytree(old, new)
    assert find_resumable_checkpoint(str(new)) == str(new / 'epoch_2.pth')  # the old place still there, unread
    shutil.rmtree(old)
    assert find_resumable_checkpoint(str(new)) == str(new / 'epoch_2.pth')


@pytest.mark.parametrize('named', ['missing', 'truncated', 'foreign'])
def test_unusable_files_named_by_last_checkpoint_fall_back_to_the_newest_complete(tmp_path, named):
    mmengine_checkpoint(tmp_path / 'epoch_1.pth')
    mmengine_checkpoint(tmp_path / 'epoch_2.pth')
    os.utime(tmp_path / 'epoch_1.pth', (1, 1))  # epoch_2 is the newest
    target = tmp_path / 'epoch_3.pth'
    if named == 'truncated':
        target.write_bytes((tmp_path / 'epoch_2.pth').read_bytes()[:100])
    elif named == 'foreign':
        target.write_bytes(b'{"not": "a checkpoint"}')
    (tmp_path / 'last_checkpoint').write_text(str(target))
    assert find_resumable_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_2.pth')


def test_pretrained_loading_through_init_cfg_refuses_code(tmp_path):
    from mmdet.registry import MODELS

    marker = tmp_path / 'code_ran'
    path = crafted_checkpoint(tmp_path / 'pit_s_809.pth', marker)
    model = MODELS.build(dict(type='PiT', arch='ti', init_cfg=dict(type='Pretrained', checkpoint=str(path))))
    with pytest.raises(CheckpointError, match=f'{path}: refused: it needs the global posix.mkdir'):
        model.init_weights()
    assert not marker.exists()


def test_weights_under_model_reach_mmengine_and_training_arguments_are_data(tmp_path):
    """A DeiT / PiT trainer's checkpoint, ``{'model': weights, 'args': Namespace, ...}``, given to
    ``load_from``, ``tools/test.py`` or ``init_detector``: mmengine took the whole dict for the weights
    and left the model random (one log line). Its weights now load, and ``args`` is read as data."""
    import argparse

    from mmengine.runner import load_checkpoint

    from pit_det.checkpoint import read_state_dict

    model = torch.nn.Linear(3, 2)
    weights = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    path = tmp_path / 'deit_style.pth'
    torch.save({'model': weights, 'args': argparse.Namespace(lr=5e-4, model='pit_s'), 'epoch': 299}, path)
    assert safe_torch_load(path)['args'].lr == 5e-4
    load_checkpoint(model, str(path), map_location='cpu')
    for key, value in weights.items():
        assert torch.equal(model.state_dict()[key], value), key
    assert read_state_dict(path).keys() == weights.keys()


def test_a_detector_names_the_classes_of_its_checkpoint_else_of_its_config_else_cocos(tmp_path):
    """``build_detector`` reads a checkpoint once, weights and meta together, and names classes as
    the demo, the export and the sampling tool show them. mmdet 3.3.0's ``init_detector`` went from
    the checkpoint's meta straight to COCO's names: a toy detector without meta drew COCO's."""
    from mmdet.datasets import CocoDataset

    from pit_det.models import build_detector

    toy = ROOT / 'configs/toy/deformable_detr_pit_s_toy.py'
    model = build_detector(str(toy))
    config_classes = ['rectangle', 'ellipse', 'triangle']
    assert model.dataset_meta['classes'] == config_classes and model.cfg.filename == str(toy)
    path = tmp_path / 'toy.pth'
    for meta, classes in (
        ({'dataset_meta': {'CLASSES': ('x', 'y', 'z')}}, ['x', 'y', 'z']),  # mmdet lowercases the keys
        ({'epoch': 3}, config_classes),
    ):
        torch.save({'state_dict': model.state_dict(), 'meta': meta}, path)
        assert build_detector(str(toy), str(path)).dataset_meta['classes'] == classes
    no_names = {'test_dataloader.dataset.metainfo': None}
    assert build_detector(str(toy), str(path), cfg_options=no_names).dataset_meta['classes'] == list(
        CocoDataset.METAINFO['classes']
    )
