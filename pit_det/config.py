"""Config and launcher glue between the tools and mmengine: the config as the tools load it
(command-line overrides, data root, work dir, :func:`pit_det.integration.install` called) and
distributed runs on CPU. Checkpoint reading and writing live in :mod:`pit_det.checkpoint`."""

import os.path as osp
from typing import List, Optional, Tuple

import torch
from mmengine.config import Config, DictAction

from .errors import PitDetError


def set_data_root(cfg: Config, data_root: str) -> None:
    """Point every dataset and COCO evaluator of ``cfg`` at ``data_root`` (standard COCO
    layout), keeping each dataset's relative ``ann_file`` and image prefix."""
    data_root = data_root.rstrip('/') + '/'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(loader) is None:
            continue
        dataset = cfg[loader]['dataset']
        while 'dataset' in dataset:  # wrappers such as RepeatDataset
            dataset = dataset['dataset']
        dataset['data_root'] = data_root
    for evaluator in ('val_evaluator', 'test_evaluator'):
        for _, metric in metric_configs(cfg.get(evaluator), evaluator):
            if isinstance(metric, dict) and metric.get('ann_file'):
                metric['ann_file'] = data_root + 'annotations/' + osp.basename(metric['ann_file'])


def metric_configs(evaluator_cfg, name: str = 'test_evaluator') -> List[Tuple[str, dict]]:
    """The metrics' configs of an evaluator's config, in the order mmengine 0.10.7's
    ``build_evaluator`` builds them from its three forms: one metric, a list of them, or a dict
    with ``metrics``. They are the config's own dicts: editing one edits the config.

    Returns:
        (key, config) pairs; ``key`` is the metric's ``--cfg-options`` path for an evaluator config
        called ``name``: ``name``, ``name.0``, ... or ``name.metrics.0``, ...
    """
    if evaluator_cfg is None:
        return []
    if isinstance(evaluator_cfg, dict) and 'metrics' in evaluator_cfg:
        name, evaluator_cfg = f'{name}.metrics', evaluator_cfg['metrics']
    if isinstance(evaluator_cfg, (list, tuple)):
        return [(f'{name}.{i}', cfg) for i, cfg in enumerate(evaluator_cfg)]
    return [(name, evaluator_cfg)]


def setup_cpu_distributed(cfg: Config) -> None:
    """Make ``cfg.launcher='pytorch'`` work without GPUs (torchrun on CPU, gloo).

    mmengine 0.10.7 always calls ``torch.cuda.set_device`` when it initialises the process
    group and wraps the model in DDP with ``device_ids=[LOCAL_RANK]``; both fail on CPU. Here
    the gloo group is initialised first (mmengine then skips its own) and DDP gets
    ``device_ids=None``, as CPU modules require. No-op with CUDA or without a launcher.
    """
    if torch.cuda.is_available():
        return
    cfg.env_cfg.setdefault('dist_cfg', {})['backend'] = 'gloo'
    if cfg.get('launcher', 'none') == 'none':
        return
    if cfg.launcher != 'pytorch':
        raise RuntimeError(f'launcher {cfg.launcher!r} needs GPUs; on CPU use torchrun (--launcher pytorch)')
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend='gloo')
    wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel', broadcast_buffers=False)
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper


def shutdown_distributed() -> None:
    """Destroy the process group, if any, before the interpreter exits.

    mmengine never destroys the group it (or :func:`setup_cpu_distributed`) created. Left to
    the interpreter's teardown, gloo's worker threads are destroyed while still joinable and
    the process aborts ("terminate called without an active exception", SIGABRT) after the
    run has finished, and torchrun then reports the whole run as failed.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # no rank tears down while another still talks to it
        torch.distributed.destroy_process_group()


class ConfigOptions(DictAction):
    """mmengine's ``DictAction`` (``--cfg-options KEY=VALUE ...``), with a malformed item named as an
    argparse error instead of a ValueError traceback."""

    def __call__(self, parser, namespace, values, option_string=None):
        bad = [value for value in (values if isinstance(values, list) else [values]) if '=' not in value]
        if bad:
            parser.error(f'{option_string} {" ".join(bad)}: write KEY=VALUE, e.g. model.num_queries=100')
        super().__call__(parser, namespace, values, option_string)


def read_config(path: str) -> Config:
    """``Config.fromfile``, with a config that cannot be read named with its error.

    Raises:
        FileNotFoundError: no such file.
        PitDetError: the file is no Python config, or running it failed (syntax, a name, an import).
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'no such config file: {path}')
    import yaml

    try:
        return Config.fromfile(path)
    except SyntaxError as err:
        raise PitDetError(f'{path}: not a Python config: {err.msg} (line {err.lineno}: {err.text!r})') from None
    except (OSError, yaml.YAMLError, NameError, ImportError, AttributeError, KeyError, TypeError, ValueError) as err:
        # OSError: mmengine's answer to a file that is no .py / .yml / .json
        raise PitDetError(f'{path}: the config could not be read ({type(err).__name__}: {err})') from None


def _unset_parent(path: str, cfg: Config, options: dict) -> str:
    """Which option sets a key inside one that the config sets to None (the toy configs' backbone
    ``init_cfg``), and the fix; '' for another cause."""
    for key in options:
        parts = key.split('.')
        node = cfg
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node, (dict, Config)) or part not in node:
                break
            if node[part] is None:
                parent = '.'.join(parts[: i + 1])
                fix = f'set all of {parent} in a config that inherits this one'
                if parent == 'model.backbone.init_cfg':
                    fix += ", e.g. model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=PATH)))"
                return f'{key}: {path} sets {parent} to None, which has no {parts[i + 1]!r} to change; {fix}'
            node = node[part]
    return ''


def load_config(
    path: str,
    launcher: str = 'none',
    cfg_options: Optional[dict] = None,
    data_root: Optional[str] = None,
    work_dir: Optional[str] = None,
) -> Config:
    """The config as the tools use it: command-line overrides merged, data root moved,
    work dir defaulting to ``work_dirs/<config name>``, CPU distributed set up."""
    from .integration import install  # importing it installs; importing this module does not

    install()  # checkpoints read weights-only and written atomically, whatever the config imports
    cfg = read_config(path)
    cfg.launcher = launcher
    if cfg_options:
        try:
            cfg.merge_from_dict(cfg_options)
        except TypeError as err:  # mmengine cannot merge a key into a value that is not a dict
            raise PitDetError(f'--cfg-options: {_unset_parent(path, cfg, cfg_options) or err}') from None
    if data_root:
        set_data_root(cfg, data_root)
    cfg.work_dir = work_dir or cfg.get('work_dir') or osp.join('./work_dirs', osp.splitext(osp.basename(path))[0])
    setup_cpu_distributed(cfg)  # gloo instead of NCCL when there is no GPU
    return cfg
