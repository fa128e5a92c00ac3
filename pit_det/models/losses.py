"""The classification loss of pit-det's detectors, on every mmcv build."""

import torch
import torch.nn.functional as F
from mmdet.models.losses import FocalLoss
from mmdet.registry import MODELS
from torch import Tensor

from ..ops.mmcv_cuda import mmcv_has_cuda_ops


@MODELS.register_module()
class PortableFocalLoss(FocalLoss):
    """mmdet's sigmoid ``FocalLoss`` (Lin et al., arXiv 1708.02002) that calls mmcv's compiled CUDA
    kernel only where mmcv has one; the shipped configs' ``loss_cls``.

    Follows mmdet 3.3.0 ``FocalLoss.forward``, which sends a CUDA prediction with class-index
    targets to mmcv's ``sigmoid_focal_loss`` whenever a GPU is visible. An mmcv built without CUDA
    ops (pit-det's set-up on a GPU machine without ``nvcc``) has no such kernel, and training
    stopped at the first loss. Here those targets are made one-hot first, which is mmdet's own
    CPU branch: its PyTorch ``py_sigmoid_focal_loss``, the same loss with autograd's gradients.
    With mmcv's CUDA ops, the kernel runs as in mmdet, but bf16 logits (``--amp`` with bf16) are
    given to it in fp32: mmcv 2.1.0's kernel is compiled for fp16, fp32 and fp64 only
    (``focal_loss_cuda.cu``) and would stop training there. On CPU nothing changes. Arguments and
    state are ``FocalLoss``'s.
    """

    def forward(self, pred: Tensor, target: Tensor, weight=None, avg_factor=None, reduction_override=None) -> Tensor:
        """Args and return as ``FocalLoss.forward``: ``pred`` (N, C) logits, ``target`` (N,)
        class indices (C = background) or (N, C) one-hot."""
        if pred.is_cuda and not self.activated and pred.dim() != target.dim():
            if not mmcv_has_cuda_ops():
                num_classes = pred.size(1)
                # mmdet's CPU branch, verbatim: index C (background) becomes an all-zero row.
                target = F.one_hot(target, num_classes=num_classes + 1)[:, :num_classes]
            elif pred.dtype == torch.bfloat16:
                pred = pred.float()  # autograd casts the gradient back to bf16
        return super().forward(pred, target, weight, avg_factor, reduction_override)
