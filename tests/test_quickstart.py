"""tools/quickstart.py (`make demo`) fails when the model it trained learned nothing, so that CI
cannot pass on a quick start whose training is broken. The training and evaluation are stubbed
here (they run for real in `make demo` and in test_toy_e2e.py); the stub writes their metrics."""

import json
import sys

import pytest
from tool_modules import load_tool


def quickstart(monkeypatch, tmp_path, ap_before: float, ap_after: float):
    tool = load_tool('tools/quickstart.py')
    work = tmp_path / 'work'

    def fake_run(cmd):  # what tools/train.py and tools/test.py leave in the work dir
        work.mkdir(exist_ok=True)
        if 'tools/train.py' in map(str, cmd):
            (work / 'last_checkpoint').write_text(str(work / 'epoch_4.pth'))
            metrics, ap = 'metrics_before_train.json', ap_before
        else:
            metrics, ap = 'metrics.json', ap_after
        (work / metrics).write_text(json.dumps({f'coco/bbox_mAP{k}': ap for k in ('', '_50', '_75')}))

    monkeypatch.setattr(tool, 'run', fake_run)
    monkeypatch.setattr(tool, 'make_toy_coco', lambda root: root)
    monkeypatch.setattr(sys, 'argv', ['quickstart.py', '--work-dir', str(work), '--data-root', str(tmp_path)])
    return tool.main


def test_quick_start_passes_when_the_model_learned(monkeypatch, tmp_path, capsys):
    quickstart(monkeypatch, tmp_path, 0.0, 0.291)()
    assert 'trained 0.291' in capsys.readouterr().out


@pytest.mark.parametrize('after', [0.0, 0.149])
def test_quick_start_fails_when_the_model_learned_nothing(monkeypatch, tmp_path, after):
    with pytest.raises(SystemExit, match=f"trained model's AP {after:.3f} is below 0.15 .untrained 0.000"):
        quickstart(monkeypatch, tmp_path, 0.0, after)()
