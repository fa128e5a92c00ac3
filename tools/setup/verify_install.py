"""Prove the installed stack works: imports, one CPU forward of mmcv's deformable attention,
pit-det's C++ kernel built (first run: about 20 s on 2 Xeon cores, 45 s on 2 Zen 3 cores, then
cached) and equal to mmcv's, and with a CUDA GPU, the GPU kernel (mmcv's CUDA one, or pit-det's
Triton one where mmcv has no CUDA ops) equal to the CPU result."""

import time
import warnings

import torch


class SetupError(RuntimeError):
    pass


def check_cuda_ops(attn, inputs: dict, expected: torch.Tensor, device: str = 'cuda') -> str:
    """With a CUDA GPU visible: deformable attention on CUDA must equal the CPU result, through
    mmcv's CUDA kernel when mmcv has CUDA ops, else through pit-det's Triton kernel (the set-up's
    choice on a machine without nvcc). Returns what was checked. (``device`` is for tests: 'cpu'
    runs the same branch on CPU, under Triton's interpreter.)"""
    if not torch.cuda.is_available():
        return 'no CUDA GPU'
    from mmcv.ops import get_compiling_cuda_version

    from pit_det.models import msda_impl_as
    from pit_det.ops import resolve

    kernel = resolve('fast', 'cuda')  # 'mmcv-cuda' or 'triton'
    gpu = {k: v.to(device) for k, v in inputs.items()}
    try:
        with msda_impl_as(attn, 'stock' if kernel == 'mmcv-cuda' else 'triton'):
            out = attn.to(device)(**gpu).cpu()
    except Exception as err:
        raise SetupError(
            f'deformable attention failed on {torch.cuda.get_device_name()} in the {kernel} kernel: {err}'
        ) from err
    finally:
        attn.cpu()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    if kernel == 'mmcv-cuda':
        return (
            f'CUDA ops (built for CUDA {get_compiling_cuda_version()}) equal to CPU on {torch.cuda.get_device_name()}'
        )
    return (
        f'Triton kernel equal to CPU on {torch.cuda.get_device_name()} (mmcv has no CUDA ops; '
        "for mmcv's CUDA kernel, install nvcc and run the set-up again)"
    )


def check_fused_library(shapes: torch.Tensor, start: torch.Tensor) -> str:
    """Builds the runtime libraries of fused exports (pit_det_deploy.fused) now rather than at a
    fused graph's first load, and checks that both runtimes run the PyTorch extension's kernel.
    A library that cannot be built here (no onnxruntime headers offline, say) is reported, not
    fatal: only ``--msda fused`` graphs need it, and loading one then names the reason again. One
    that builds but does not load, or computes something else, is a failed install.

    Args:
        shapes, start: a level layout (``spatial_shapes``, ``level_start_index``) to run the op on.

    Returns:
        The line the install check prints about the libraries.
    """
    import tempfile

    import onnx

    from pit_det.ops import load_extension
    from pit_det_deploy import RUNTIMES, fused, load_graph

    num_value = int((shapes[:, 0] * shapes[:, 1]).sum())
    value, loc, attn = torch.randn(1, num_value, 4, 8), torch.rand(1, 5, 4, 2, 2, 2), torch.rand(1, 5, 4, 2, 2)
    expected = load_extension().forward(value, shapes, start, loc, attn).numpy()
    feed = dict(zip(fused.INPUTS, (t.numpy() for t in (value, shapes, start, loc, attn))))
    with tempfile.TemporaryDirectory() as tmp:
        path = f'{tmp}/node.onnx'
        onnx.save(fused.node_model(), path)
        built, missing = [], []
        for runtime in RUNTIMES:
            try:
                (got,) = load_graph(path, runtime)(feed)
            except fused.FusedUnavailable as e:
                missing.append(runtime)
                print(f'note: no fused-op library for {runtime}, so --msda fused graphs will not load in it: {e}')
                continue
            if not (got == expected).all():
                raise SetupError(f"pit-det's fused op in {runtime} differs from the PyTorch extension")
            built.append(runtime)
    return f'fused-op libraries built for {" and ".join(built) or "no runtime"}' + (
        f' (not for {" and ".join(missing)}: see the note above)' if missing else ''
    )


def main() -> None:
    t0 = time.time()
    import mmcv
    import mmcv.ops  # noqa: F401  compiled ops must import, not mmcv-lite
    import mmdet
    import mmengine

    with warnings.catch_warnings():  # its deprecation notice is setuptools', not an action for the user
        warnings.simplefilter('ignore')
        import pkg_resources  # noqa: F401  mmengine imports it at run time (needs setuptools < 81)
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
    inputs = dict(query=query, value=value, reference_points=ref, spatial_shapes=shapes, level_start_index=start)
    out = attn(**inputs)
    assert out.shape == (1, 5, 32) and torch.isfinite(out).all(), out.shape
    cuda = check_cuda_ops(attn, inputs, out)

    from pit_det.models import set_msda_impl

    set_msda_impl(attn, 'fast')  # compiles the kernel now rather than inside the first training run
    fast = attn(**inputs)
    torch.testing.assert_close(fast, out, atol=1e-5, rtol=1e-5)
    fused = check_fused_library(shapes, start)
    print(
        f'install check OK in {time.time() - t0:.1f}s: torch {torch.__version__}, '
        f'torchvision {torchvision.__version__}, '
        f'mmcv {mmcv.__version__} (ops), mmengine {mmengine.__version__}, mmdet {mmdet.__version__}, '
        f'timm {timm.__version__}, pit_det {pit_det.__version__} (C++ deformable attention kernel built); '
        f'{fused}; {cuda}'
    )


if __name__ == '__main__':
    try:
        main()
    except SetupError as err:
        raise SystemExit(f'install check FAILED: {err}')
