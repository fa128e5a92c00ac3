"""mmcv's MultiScaleDeformableAttention with a selectable kernel (see ``pit_det.ops``).

mmdet builds ``MultiScaleDeformableAttention`` directly inside its Deformable DETR layers, not
through a registry, so ``set_msda_impl`` switches existing modules to this subclass in place:
same parameters, same state-dict keys, only ``forward`` differs.
"""

from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch
from mmcv.ops import MultiScaleDeformableAttention
from torch import Tensor, nn

from ..ops import device_type, resolve, run_kernel


class MSDeformAttn(MultiScaleDeformableAttention):
    """``MultiScaleDeformableAttention`` whose sampling kernel is chosen by ``self.impl`` (the
    config's ``msda_impl``): on each device the kernel that :func:`pit_det.ops.resolve` returns.

    The forward equals mmcv's (batch-first or not, padding mask, 2-d points or 4-d boxes as
    references); the offset and weight projections share one matmul because both read the same
    query.
    """

    impl: str = 'auto'
    # Set by :func:`set_msda_impl`: device type -> kernel, resolved outside the forward, so that
    # ``torch.compile`` traces a dict lookup rather than the decision (which logs and may build).
    kernels: Dict[str, str] = {}
    # Set by :func:`record_sampling`: called with what the kernel receives, before it runs.
    recorder: Optional[Callable[..., None]] = None

    def forward(
        self,
        query: Tensor,
        key: Optional[Tensor] = None,
        value: Optional[Tensor] = None,
        identity: Optional[Tensor] = None,
        query_pos: Optional[Tensor] = None,
        key_padding_mask: Optional[Tensor] = None,
        reference_points: Optional[Tensor] = None,
        spatial_shapes: Optional[Tensor] = None,
        level_start_index: Optional[Tensor] = None,
        level_shapes: Optional[List[Tuple[int, int]]] = None,
        **kwargs,
    ) -> Tensor:
        """
        Args:
            query: (B, Q, C) if ``batch_first`` else (Q, B, C).
            value: like query with S = sum of H_l * W_l tokens; defaults to ``query``.
            identity: added to the output; defaults to ``query``.
            query_pos: added to ``query`` before the offset and weight projections.
            key_padding_mask: (B, S), True where a value token is padding.
            reference_points: (B, Q, L, 2) normalised points, or (B, Q, L, 4) boxes (cx, cy, w, h).
            spatial_shapes: (L, 2) int64 (H_l, W_l).
            level_start_index: (L,) int64.
            level_shapes: ``spatial_shapes`` as Python ints, for the 'grid_sample' and 'gather' kernels.

        Returns:
            Same shape as ``query``.
        """
        value = query if value is None else value
        identity = query if identity is None else identity
        if query_pos is not None:
            query = query + query_pos
        if not self.batch_first:
            query, value = query.transpose(0, 1), value.transpose(0, 1)
        B, Q, _ = query.shape
        M, L, P = self.num_heads, self.num_levels, self.num_points

        value = self.value_proj(value)
        if key_padding_mask is not None:
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        value = value.view(B, value.shape[1], M, -1)

        # One matmul for both projections of the query: (B, Q, M*L*P*2 + M*L*P).
        weight = torch.cat([self.sampling_offsets.weight, self.attention_weights.weight])
        bias = torch.cat([self.sampling_offsets.bias, self.attention_weights.bias])
        offsets, weights = nn.functional.linear(query, weight, bias).split([M * L * P * 2, M * L * P], dim=-1)
        weights = weights.view(B, Q, M, L * P).softmax(-1).view(B, Q, M, L, P)

        # Locations as mmcv computes them, the same operations on the same numbers, but with
        # the small operands expanded to the (L, P, 2) inner block first: broadcasting (L, 2)
        # against (B, Q, M, L, P, 2) directly is a slow strided loop on CPU.
        offsets = offsets.view(B, Q, M, L * P * 2)
        if reference_points.shape[-1] == 2:
            normalizer = spatial_shapes.flip(-1).to(offsets.dtype)  # (L, 2) as (W, H)
            normalizer = normalizer[:, None, :].expand(L, P, 2).reshape(L * P * 2)
            ref = reference_points[:, :, :, None, :].expand(B, Q, L, P, 2).reshape(B, Q, 1, -1)
            locations = ref + offsets / normalizer
        elif reference_points.shape[-1] == 4:
            ref, wh = (
                reference_points[:, :, :, None, i : i + 2].expand(B, Q, L, P, 2).reshape(B, Q, 1, -1) for i in (0, 2)
            )
            locations = ref + offsets / P * wh * 0.5
        else:
            raise ValueError(f'reference_points must end in 2 or 4 values, got shape {tuple(reference_points.shape)}')
        locations = locations.view(B, Q, M, L, P, 2)

        if self.recorder is not None:
            self.recorder(
                self,
                value=value,
                spatial_shapes=spatial_shapes,
                level_start_index=level_start_index,
                sampling_locations=locations,
                attention_weights=weights,
                reference_points=reference_points,
            )
        kind = device_type(value)
        kernel = self.kernels.get(kind) or resolve(self.impl, kind)  # resolve raises with the reason
        output = run_kernel(
            kernel,
            value,
            spatial_shapes,
            level_start_index,
            locations,
            weights,
            im2col_step=self.im2col_step,
            level_shapes=level_shapes,
        )
        output = self.output_proj(output)
        if not self.batch_first:
            output = output.transpose(0, 1)
        return self.dropout(output) + identity


def set_msda_impl(model: nn.Module, impl: str) -> int:
    """Switches every multi-scale deformable attention in ``model`` to kernel ``impl``.

    'stock' gives the modules back mmcv's own class and forward, so the stock path is mmcv's code
    unchanged; the others make them ``MSDeformAttn`` with that kernel.

    Args:
        model: any module; its ``MultiScaleDeformableAttention`` submodules are switched in place.
        impl: one of ``pit_det.ops.IMPLS``, resolved here, once, for CUDA where a GPU is visible
            and for CPU otherwise (or where CUDA has no kernel for it):
            :func:`pit_det.ops.resolve`, which logs the kernel. The other device is resolved at its
            first forward: a GPU process does not build the C++ CPU kernel it may never run.

    Raises:
        ValueError: an unknown ``impl``.
        ExtensionUnavailable, TritonUnavailable: where ``impl`` runs on no device of this machine
            ('fast' on CPU without a C++ toolchain, 'triton' outside Triton's interpreter); the
            reason is the GPU's where one is visible. A kernel that only the other device lacks is
            reported at that device's first forward.

    Returns:
        How many modules were switched.
    """
    kernels, errors = {}, {}
    devices = ('cuda', 'cpu') if torch.cuda.is_available() else ('cpu',)
    for kind in devices:
        try:
            kernels[kind] = resolve(impl, kind)
            break
        except (ValueError, RuntimeError) as err:  # a forward on that device raises it again
            errors[kind] = err
    if not kernels:
        raise errors[devices[0]]  # fail now, not at the first forward
    count = 0
    for module in model.modules():
        if isinstance(module, MultiScaleDeformableAttention):
            module.__class__ = MultiScaleDeformableAttention if impl == 'stock' else MSDeformAttn
            module.impl = impl
            module.kernels = kernels
            count += 1
    return count


@contextmanager
def msda_impl_as(model: nn.Module, impl: str) -> Iterator[None]:
    """:func:`set_msda_impl` for the duration of the block; every module gets its own kernel back
    after it (export switches a detector to the traceable kernel without changing it for good)."""
    saved = [
        (m, m.__class__, m.__dict__.get('impl'), m.__dict__.get('kernels'))
        for m in model.modules()
        if isinstance(m, MultiScaleDeformableAttention)
    ]
    set_msda_impl(model, impl)
    try:
        yield
    finally:
        for module, cls, own, kernels in saved:
            module.__class__ = cls
            for name, attr in (('impl', own), ('kernels', kernels)):
                if attr is None:
                    module.__dict__.pop(name, None)
                else:
                    setattr(module, name, attr)


@contextmanager
def record_sampling(model: nn.Module) -> Iterator[List[Dict[str, object]]]:
    """Records where every deformable attention of ``model`` samples, for the duration of the block.

    Each call appends a dict in call order: ``module`` (its name in ``model``, e.g.
    ``'decoder.layers.2.cross_attn'``) and the kernel's inputs, detached: ``value`` (B, S, M, D)
    after the value projection, ``spatial_shapes``, ``level_start_index``,
    ``sampling_locations`` (B, Q, M, L, P, 2), ``attention_weights`` (B, Q, M, L, P) and
    ``reference_points`` (B, Q, L, 2 or 4). Nothing of the computation changes.

    Raises:
        ValueError: ``model`` has no pit-det deformable attention (mmcv's own class, the 'stock'
            kernel, cannot be recorded; switch with ``set_msda_impl``).
    """
    names = {m: n for n, m in model.named_modules() if isinstance(m, MSDeformAttn)}
    if not names:
        raise ValueError(
            "no recordable deformable attention: the model runs mmcv's own module (msda_impl "
            "'stock'); set_msda_impl(model, 'fast') (or 'grid_sample') first"
        )
    records: List[Dict[str, object]] = []

    def record(module: MSDeformAttn, **tensors: Tensor) -> None:
        records.append(dict(module=names[module], **{k: t.detach() for k, t in tensors.items()}))

    for module in names:
        module.recorder = record
    try:
        yield records
    finally:
        for module in names:
            module.__dict__.pop('recorder', None)
