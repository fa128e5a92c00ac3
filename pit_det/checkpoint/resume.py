"""Which checkpoint ``--resume`` continues from, and the seed it was trained with."""

import os
import os.path as osp
import re
import zipfile
from typing import Optional

from ..errors import CheckpointError
from .reading import safe_torch_load


def _is_complete_checkpoint(path: str) -> bool:
    """A torch checkpoint is a zip archive; a truncated or foreign file has no central directory."""
    return osp.isfile(path) and zipfile.is_zipfile(path)


def _inside(path: str, folder: str) -> bool:
    real, root = osp.realpath(path), osp.realpath(folder)
    return real == root or real.startswith(root + os.sep)


def find_resumable_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``--resume`` (no path) continues from: the file named in the work dir's
    ``last_checkpoint`` when it is complete, else the newest complete ``epoch_*.pth`` /
    ``iter_*.pth`` of the work dir; None when there is none.

    mmengine writes an absolute path into ``last_checkpoint``: in a work dir copied or mounted
    elsewhere (new scratch space, a container) it names the old place, so a file of that name
    inside the work dir stands for it.

    Raises:
        CheckpointError: ``last_checkpoint`` names a file outside the work dir (links resolved)
            and the work dir holds none of its name. A work dir is where a crafted file would be
            planted; the run trusts no pointer out of it.
    """
    record = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(record):
        with open(record) as f:
            named = f.read().strip()
        moved = osp.join(work_dir, osp.basename(named))
        if named and not _inside(named, work_dir) and _inside(moved, work_dir) and osp.isfile(moved):
            named = moved  # the work dir moved since the pointer was written
        if named and not _inside(named, work_dir):
            raise CheckpointError(
                f'{record} names {named}, which is outside the work dir {work_dir}; refusing to resume from '
                f'it. To continue from that file, pass it explicitly: --resume {named}'
            )
        if named and _is_complete_checkpoint(named):
            return named
    candidates = (
        [osp.join(work_dir, f) for f in os.listdir(work_dir) if re.fullmatch(r'(epoch|iter)_\d+\.pth', f)]
        if osp.isdir(work_dir)
        else []
    )
    candidates = sorted((c for c in candidates if _is_complete_checkpoint(c)), key=osp.getmtime)
    return candidates[-1] if candidates else None


def resumable_meta(path: str) -> dict:
    """The ``meta`` of a checkpoint that ``--resume`` can continue from (read weights-only and
    memory-mapped): its ``seed``, ``epoch`` and ``iter``.

    Raises:
        CheckpointError: the file lacks what mmengine 0.10.7's ``Runner.resume`` reads unguarded
            (``state_dict``, ``message_hub``, ``meta.epoch`` and ``meta.iter``; the optimizer state
            is optional there), as a released or converted weight file does; names the file and the fix.
    """
    checkpoint = safe_torch_load(path, map_location='cpu', mmap=True)
    checkpoint = checkpoint if isinstance(checkpoint, dict) else {}
    meta = checkpoint.get('meta') if isinstance(checkpoint.get('meta'), dict) else {}
    missing = [key for key in ('state_dict', 'message_hub') if key not in checkpoint]
    missing += [f'meta.{key}' for key in ('epoch', 'iter') if key not in meta]
    if missing:
        raise CheckpointError(
            f'--resume {path}: not a training checkpoint (no {", ".join(missing)}). To start a new run '
            f'from its weights: --cfg-options load_from={path}'
        )
    return meta
