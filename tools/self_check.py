"""Prove the installed stack works: imports, one CPU forward of mmcv's deformable attention, and
pit-det's C++ kernel built (first run: about 20 s, then cached) and equal to mmcv's."""
import time

import torch


def main() -> None:
    t0 = time.time()
    import pkg_resources  # noqa: F401  mmengine imports it at run time (needs setuptools < 81)

    import mmcv
    import mmcv.ops  # noqa: F401  compiled ops must import, not mmcv-lite
    import mmdet
    import mmengine
    import timm
    import torchvision
    from mmcv.ops import MultiScaleDeformableAttention

    import pit_det

    attn = MultiScaleDeformableAttention(embed_dims=32, num_heads=4, num_levels=2, num_points=2, batch_first=True)
    attn.eval()  # no dropout: the two kernels are compared below
    shapes = torch.tensor([[6, 8], [3, 4]])
    start = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    num_value = int((shapes[:, 0] * shapes[:, 1]).sum())
    value = torch.randn(1, num_value, 32)
    query = torch.randn(1, 5, 32)
    ref = torch.rand(1, 5, 2, 2)
    out = attn(query, value=value, reference_points=ref, spatial_shapes=shapes, level_start_index=start)
    assert out.shape == (1, 5, 32) and torch.isfinite(out).all(), out.shape

    from pit_det.models import set_msda_impl
    set_msda_impl(attn, 'fast')  # compiles the kernel now rather than inside the first training run
    fast = attn(query, value=value, reference_points=ref, spatial_shapes=shapes, level_start_index=start)
    torch.testing.assert_close(fast, out, atol=1e-5, rtol=1e-5)
    print(
        f"self-check OK in {time.time() - t0:.1f}s: torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"mmcv {mmcv.__version__} (ops), mmengine {mmengine.__version__}, mmdet {mmdet.__version__}, "
        f"timm {timm.__version__}, pit_det {pit_det.__version__} (C++ deformable attention kernel built)"
    )


if __name__ == "__main__":
    main()
