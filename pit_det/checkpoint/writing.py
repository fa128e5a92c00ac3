"""Atomic checkpoint writes for mmengine's local file backend."""

import os
import os.path as osp
import secrets

from mmengine.fileio import LocalBackend


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend, writing each file to a temporary name in the same
    folder and renaming it into place: a run killed while saving a checkpoint leaves the
    previous file intact, never a truncated one under the final name."""

    def put(self, obj: bytes, filepath) -> None:
        filepath = str(filepath)
        folder = osp.dirname(filepath) or '.'
        os.makedirs(folder, exist_ok=True)
        tmp = osp.join(folder, f'.{osp.basename(filepath)}.{os.getpid()}.{secrets.token_hex(4)}.tmp')
        # Mode 0666 less the umask, as a plain open() would give (mkstemp's 0600 would hide
        # checkpoints from the rest of a group on shared storage).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, 'wb') as f:
                f.write(obj)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, filepath)
        except BaseException:
            if osp.exists(tmp):
                os.remove(tmp)
            raise
