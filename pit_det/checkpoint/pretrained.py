"""Strict loading of pretrained backbone weights (ImageNet files or a detector's ``backbone.*``)."""

from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch
from mmengine.logging import print_log
from torch import nn

from ..errors import CheckpointError
from .compare import state_dict_mismatch
from .reading import StateDict, read_state_dict


def strip_prefix(state_dict: StateDict, prefix: str) -> StateDict:
    """Keep only keys under ``prefix`` (e.g. ``'backbone.'`` of a detector) without it;
    the state dict is returned unchanged when no key has the prefix."""
    if not any(k.startswith(prefix) for k in state_dict):
        return state_dict
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def load_pretrained(
    model: nn.Module,
    path: Union[str, Path],
    filter_fn: Callable[[StateDict], StateDict],
    keep_init: Sequence[str] = (),
    logger: Optional[str] = 'current',
) -> None:
    """Load backbone weights from ``path`` through ``filter_fn`` into ``model``.

    Every parameter and buffer of ``model`` must be present, except those under a
    ``keep_init`` prefix (layers the detection backbone adds on top of the ImageNet
    model): those keep their own initialisation when absent, and the log names them.
    Other missing keys are an error naming them. Keys the model does not use are logged.

    Raises:
        CheckpointError: missing keys or mismatched shapes, each named.
    """
    state = filter_fn(strip_prefix(read_state_dict(path), 'backbone.'))
    own = model.state_dict()
    mismatch = state_dict_mismatch(own, state)
    kept = [k for k in mismatch.missing if k.startswith(tuple(keep_init))]
    missing = [k for k in mismatch.missing if k not in kept]
    if missing:
        raise CheckpointError(f'{path}: {len(missing)} backbone weights missing from the checkpoint: {missing}')
    unexpected = mismatch.unexpected
    if mismatch.shapes:
        raise CheckpointError(f'{path}: shape mismatch (wrong arch, or distilled flag?): {mismatch.shapes}')
    model.load_state_dict({k: state[k] for k in own if k in state}, strict=not kept)
    print_log(
        f'loaded {len(own) - len(kept)} tensors from {path}'
        + (f'; {len(kept)} not in it keep their own init (added for detection): {kept}' if kept else '')
        + (f'; ignored {len(unexpected)} unused keys: {unexpected}' if unexpected else ''),
        logger=logger,
    )


def require_pretrained_loaded(module: nn.Module) -> None:
    """After mmengine's ``Pretrained`` init of a local file (mmdet's ResNet in the R50 config, without
    DCN or plugins, whose extra layers mmdet leaves initialised): every tensor of ``module`` equals
    the file's. mmengine 0.10.7's ``PretrainedInit`` loads what fits and
    only logs the rest, so another model's file (a PiT file, a detector checkpoint without
    ``prefix='backbone.'``) left the backbone random. pit-det's own backbones load strictly
    (:func:`load_pretrained`); a URL is mmengine's download and not checked here. Old torchvision
    files have no BatchNorm ``num_batches_tracked``, which mmengine leaves as initialised.

    Raises:
        CheckpointError: naming the file, the tensors that did not load, and the prefix fix where the
            file is a detector's.
    """
    cfg = getattr(module, 'init_cfg', None)
    if not isinstance(cfg, dict) or cfg.get('type') != 'Pretrained' or '://' in str(cfg.get('checkpoint')):
        return
    path = str(Path(cfg['checkpoint']).expanduser())  # as mmengine's loader reads it
    state = read_state_dict(path)
    prefix = cfg.get('prefix')
    if prefix:
        prefix = prefix if prefix.endswith('.') else prefix + '.'
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    own = module.state_dict()
    unloaded = [
        k
        for k, v in own.items()
        if not k.endswith('num_batches_tracked')
        # On the host: the Runner has moved the model to its GPU before it initialises the weights.
        and not (k in state and state[k].shape == v.shape and torch.equal(state[k].to(v.dtype), v.cpu()))
    ]
    if unloaded:
        hint = ''
        if not prefix and any(k.startswith('backbone.') for k in state):
            hint = "; it is a detector's checkpoint: add --cfg-options model.backbone.init_cfg.prefix=backbone."
        raise CheckpointError(
            f'{path}: {len(unloaded)} of {len(own)} backbone tensors did not load from it (mmengine loads what '
            f'fits and leaves the rest random), e.g. {unloaded[:5]}{hint}'
        )
