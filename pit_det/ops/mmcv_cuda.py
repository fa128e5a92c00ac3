"""Whether mmcv has CUDA ops: the one decision behind every mmcv CUDA kernel that pit-det reaches.

mmcv built without ``nvcc`` (``MMCV_WITH_OPS=1`` and no CUDA toolkit: pit-det's set-up on a GPU
machine without ``nvcc``) has CPU kernels only, and each of its ops fails on a CUDA tensor at the
first call ("sigmoid_focal_loss_forward_impl: implementation for device cuda:0 not found"). So every
place of a pit-det detector that would call an mmcv CUDA kernel asks here first, and takes a
PyTorch or Triton path when the answer is no:

* deformable attention: :func:`pit_det.ops.resolve` (mmcv's CUDA kernel or pit-det's Triton
  kernel);
* the classification loss: :class:`pit_det.models.losses.PortableFocalLoss` (mmcv's CUDA focal loss
  or mmdet's PyTorch one).

``tests/test_cuda_branch.py`` runs a train and a test step of every shipped detector with tensors
that report ``is_cuda`` and fails on any mmcv extension call that would need CUDA ops.
"""

from functools import lru_cache


@lru_cache(maxsize=None)
def mmcv_has_cuda_ops() -> bool:
    """True when mmcv's compiled extension was built with CUDA (``get_compiling_cuda_version()``
    names a CUDA version instead of ``'not available'``)."""
    from mmcv.ops import get_compiling_cuda_version  # mmdet imports mmcv.ops: an import error surfaces there first

    return get_compiling_cuda_version() != 'not available'
