"""The GPU branch of pit-det's detectors, run on this CPU: no mmcv CUDA op is reached where mmcv
has none.

On CPU, mmdet and mmcv take their PyTorch branches, so a CPU run never reaches the code that a GPU
user runs. Here the GPU branch is taken on CPU tensors: ``torch.cuda.is_available()`` reports True,
the tensors report ``is_cuda`` (:class:`CudaLooking`), and every call into mmcv's compiled
extension is recorded (the ``gpu_branch`` fixture). A call with a CUDA-looking tensor fails as it does
on a GPU with an mmcv built without CUDA ops, the set-up of a GPU machine without ``nvcc``; with
CUDA ops, as mmcv 2.1.0's kernels do (``AT_DISPATCH_FLOATING_TYPES_AND_HALF``), on a bf16 tensor.
"""

import json
import sys
from pathlib import Path
from typing import List, Tuple

import pytest
import torch
from mmdet.models.losses import FocalLoss
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.structures import InstanceData

import pit_det  # noqa: F401  registers PortableFocalLoss and the detector
from pit_det import ops
from pit_det.models import PortableFocalLoss, build_detector
from pit_det.ops import mmcv_cuda

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(str(p.relative_to(ROOT)) for p in (ROOT / 'configs').rglob('*.py'))


class CudaLooking(torch.Tensor):
    """A CPU tensor whose ``is_cuda`` is True. torch's default ``__torch_function__`` keeps the
    subclass on every result, so a whole forward and backward stays CUDA-looking. ``cpu()`` gives
    a plain tensor and ``numpy()`` refuses, as on a GPU; ``.to('cpu')`` still gives a CUDA-looking
    one (its ``device`` is the CPU, so the model's own ``.to(x.device)`` calls must keep it)."""

    @property
    def is_cuda(self) -> bool:
        return True

    def __deepcopy__(self, memo):  # mmdet deep-copies boxes; torch's default needs new_empty to keep the type
        return self.as_subclass(torch.Tensor).__deepcopy__(memo).as_subclass(CudaLooking)

    def cpu(self, *args, **kwargs) -> torch.Tensor:  # the host copy
        return self.as_subclass(torch.Tensor).cpu(*args, **kwargs)

    def numpy(self, *, force: bool = False):  # as a CUDA tensor: only force=True copies to the host
        if force:
            return self.cpu().numpy()
        raise TypeError(
            "can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor to host memory "
            'first.'
        )


def cuda_looking(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.as_subclass(CudaLooking)


class ReachedMmcvCuda(Exception):
    """mmcv's compiled CUDA kernel would have run here (simulated mmcv with CUDA ops)."""


@pytest.fixture
def gpu_branch(monkeypatch):
    """Switch to the GPU branch; returns ``set_cuda_ops(bool)`` and the list of recorded calls
    ``(name, a CUDA-looking tensor was passed)``. mmcv starts without CUDA ops."""
    import mmcv.ops
    from mmcv.utils import ext_loader

    ext = ext_loader.load_ext('_ext', [])  # the module object every mmcv op holds
    calls: List[Tuple[str, bool]] = []
    state = dict(cuda_ops=False)

    def recorder(name, fn):
        def call(*args, **kwargs):
            cuda = any(isinstance(a, torch.Tensor) and a.is_cuda for a in (*args, *kwargs.values()))
            calls.append((name, cuda))
            if cuda and state['cuda_ops']:
                if any(isinstance(a, torch.Tensor) and a.dtype == torch.bfloat16 for a in (*args, *kwargs.values())):
                    raise RuntimeError(f'"{name}_cuda_kernel" not implemented for \'BFloat16\'')
                raise ReachedMmcvCuda(name)
            if cuda:  # mmcv's own message on a GPU when it was built without CUDA ops
                raise RuntimeError(f'{name}_impl: implementation for device cuda:0 not found.')
            return fn(*args, **kwargs)

        return call

    for name in dir(ext):
        if not name.startswith('_') and callable(getattr(ext, name)):
            monkeypatch.setattr(ext, name, recorder(name, getattr(ext, name)))

    def set_cuda_ops(available: bool) -> None:
        state['cuda_ops'] = available
        monkeypatch.setattr(mmcv.ops, 'get_compiling_cuda_version', lambda: '13.0' if available else 'not available')
        mmcv_cuda.mmcv_has_cuda_ops.cache_clear()
        ops.resolve.cache_clear()  # the kernel that 'fast' runs on CUDA follows mmcv's build

    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    for module in list(sys.modules.values()):  # mmcv's answer, taken once at import (mmcv.utils.device_type)
        if module.__name__.startswith(('mmcv', 'mmdet', 'mmengine')) and hasattr(module, 'IS_CUDA_AVAILABLE'):
            monkeypatch.setattr(module, 'IS_CUDA_AVAILABLE', True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)  # mmengine's logger asks for the device id
    set_cuda_ops(False)
    yield set_cuda_ops, calls
    mmcv_cuda.mmcv_has_cuda_ops.cache_clear()
    ops.resolve.cache_clear()


def focal_inputs(num_classes: int = 5, n: int = 12):
    """Logits, class-index targets (``num_classes`` = background, as the DETR head gives them),
    per-query weights and an avg factor."""
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(n, num_classes, generator=g) * 3
    target = torch.randint(0, num_classes + 1, (n,), generator=g)
    weight = torch.rand(n, generator=g)
    return pred, target, weight, 7.0


def loss_and_grad(loss_module, pred, *args):
    pred = pred.clone().requires_grad_()
    loss = loss_module(pred, *args)
    loss.backward()
    return loss.detach(), pred.grad


@pytest.mark.parametrize('config', SHIPPED)
def test_shipped_loss_cls_needs_no_mmcv_cuda_op(config, gpu_branch):
    """Each shipped config's ``loss_cls`` on a CUDA prediction with mmcv built without CUDA ops
    (the GPU run stopped here: mmdet's FocalLoss called mmcv's CUDA kernel): no mmcv call, and the
    value and gradient of mmdet's FocalLoss on CPU, bit for bit (the same PyTorch code)."""
    _, calls = gpu_branch
    loss_cfg = Config.fromfile(str(ROOT / config)).model.bbox_head.loss_cls
    pred, target, weight, avg_factor = focal_inputs()
    loss, grad = loss_and_grad(MODELS.build(loss_cfg), cuda_looking(pred), target, weight, avg_factor)
    assert calls == [] and isinstance(loss, CudaLooking)
    reference = FocalLoss(**{k: v for k, v in loss_cfg.items() if k != 'type'})
    with torch.device('cpu'):
        ref_loss, ref_grad = loss_and_grad(reference, pred, target, weight, avg_factor)
    assert torch.equal(loss.as_subclass(torch.Tensor), ref_loss) and ref_loss > 0
    assert torch.equal(grad.as_subclass(torch.Tensor), ref_grad) and ref_grad.abs().sum() > 0


def test_mmdet_focal_loss_fails_in_the_simulated_gpu_branch(gpu_branch):
    """The simulation reproduces the GPU failure: mmdet's own FocalLoss reaches mmcv's CUDA focal
    loss, which an mmcv without CUDA ops lacks."""
    _, calls = gpu_branch
    pred, target, weight, avg_factor = focal_inputs()
    with pytest.raises(RuntimeError, match='sigmoid_focal_loss_forward_impl: implementation for device cuda:0'):
        FocalLoss(loss_weight=2.0)(cuda_looking(pred), target, weight, avg_factor=avg_factor)
    assert calls == [('sigmoid_focal_loss_forward', True)]


def test_mmcv_cuda_focal_loss_kept_where_mmcv_has_it(gpu_branch):
    """With mmcv's CUDA ops, the loss still runs mmcv's CUDA kernel; on CPU it never does."""
    set_cuda_ops, calls = gpu_branch
    set_cuda_ops(True)
    pred, target, weight, avg_factor = focal_inputs()
    with pytest.raises(ReachedMmcvCuda, match='sigmoid_focal_loss_forward'):
        PortableFocalLoss(loss_weight=2.0)(cuda_looking(pred), target, weight, avg_factor=avg_factor)
    PortableFocalLoss(loss_weight=2.0)(pred, target, weight, avg_factor=avg_factor)
    assert calls == [('sigmoid_focal_loss_forward', True)]


def test_bf16_logits_reach_mmcvs_cuda_focal_loss_in_fp32(gpu_branch):
    """bf16 AMP training (the head's logits in bf16) where mmcv has CUDA ops: mmcv's kernel, compiled
    for fp16, fp32 and fp64 only, gets fp32 logits (mmdet's own FocalLoss stops there); without
    CUDA ops the PyTorch branch takes bf16 as it is, with the fp32 loss of the bf16 values."""
    set_cuda_ops, calls = gpu_branch
    pred, target, weight, avg_factor = focal_inputs()
    pred16 = cuda_looking(pred.bfloat16())
    loss = PortableFocalLoss(loss_weight=2.0)(pred16, target, weight, avg_factor=avg_factor)
    with torch.device('cpu'):
        ref = FocalLoss(loss_weight=2.0)(pred.bfloat16().float(), target, weight, avg_factor=avg_factor)
    # The PyTorch branch computes in bf16: one bf16 step (2^-8) of the loss, measured 1.6e-3 (2026-12-07).
    assert calls == [] and torch.allclose(loss.float(), ref, rtol=2**-8, atol=0) and ref > 0
    set_cuda_ops(True)
    with pytest.raises(RuntimeError, match="not implemented for 'BFloat16'"):
        FocalLoss(loss_weight=2.0)(pred16, target, weight, avg_factor=avg_factor)
    with pytest.raises(ReachedMmcvCuda, match='sigmoid_focal_loss_forward'):
        PortableFocalLoss(loss_weight=2.0)(pred16, target, weight, avg_factor=avg_factor)
    assert calls == [('sigmoid_focal_loss_forward', True)] * 2


def small_batch(model, hw=(64, 96)) -> dict:
    """Two preprocessed images of ``hw`` and ``(hw[0] - 16, hw[1])`` (padding masks taken), one box
    each, made CUDA-looking after mmdet's preprocessor."""
    samples, inputs = [], []
    for i, (h, w) in enumerate([hw, (hw[0] - 16, hw[1])]):
        sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[8.0, 6.0 + i, 50.0, 40.0]]), labels=torch.tensor([i + 1])
        )
        samples.append(sample)
        inputs.append(torch.randint(0, 256, (3, h, w), dtype=torch.uint8))
    data = model.data_preprocessor(dict(inputs=inputs, data_samples=samples), training=True)
    for sample in data['data_samples']:
        sample.gt_instances.bboxes = cuda_looking(sample.gt_instances.bboxes)
    return dict(inputs=cuda_looking(data['inputs']), data_samples=data['data_samples'])


# Smallest detectors that run every module of the shipped ones: one encoder and one decoder layer,
# 20 two-stage queries (a 64 x 96 image gives at least 24 encoder tokens at every stride).
SMALL = {'model.encoder.num_layers': 1, 'model.decoder.num_layers': 1, 'model.num_queries': 20}


def train_and_test_step(config: str, cfg_options: dict) -> None:
    """One loss + backward and one predict of the config's detector on CUDA-looking tensors."""
    model = build_detector(str(ROOT / config), cfg_options={**SMALL, **cfg_options}).train()
    data = small_batch(model)
    losses = model.loss(data['inputs'], data['data_samples'])
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    assert isinstance(total, CudaLooking) and torch.isfinite(total.as_subclass(torch.Tensor))
    model.eval()
    with torch.no_grad():
        data = small_batch(model)
        results = model.predict(data['inputs'], data['data_samples'])
    assert all(isinstance(r.pred_instances.bboxes, CudaLooking) for r in results)


@pytest.mark.parametrize('config', [c for c in SHIPPED if '/toy/' not in c])
def test_train_and_test_step_reach_no_mmcv_cuda_op(config, gpu_branch, monkeypatch):
    """A train and a test step of every Table 5 detector, as a GPU without mmcv's CUDA ops runs
    them: every mmcv extension call that needs CUDA fails, as it would there, so any such call on
    the path (found by running it, not by a list) fails this test. Deformable attention runs
    pit-det's Triton kernel there; on these CPU tensors the C++ kernel stands in for it (Triton's
    interpreter would take minutes; tests/test_msda_triton.py holds the two kernels equal)."""
    from pit_det.models import msda

    _, calls = gpu_branch
    kernels = []

    def run_kernel(kernel, *args, **kwargs):
        kernels.append(kernel)
        return real(kernel, *args, **kwargs)

    real, dispatcher = msda.run_kernel, sys.modules['pit_det.ops.ms_deform_attn']
    monkeypatch.setattr(msda, 'run_kernel', run_kernel)
    # The C++ op, which dispatches on the tensors' real device (CPU), stands in for the Triton op.
    monkeypatch.setattr(dispatcher, 'ms_deform_attn_triton', lambda *inputs: dispatcher.ms_deform_attn(*inputs, 64))
    train_and_test_step(config, {})
    assert not any(cuda for _, cuda in calls), calls
    assert set(kernels) == {'triton'} and len(kernels) == 2 * 2  # 1 encoder + 1 decoder layer, train and test


def test_the_step_trace_catches_an_mmcv_cuda_op(gpu_branch):
    """The trace above is not vacuous: with mmdet's FocalLoss in the config, the train step fails
    at the loss as it did on a GPU."""
    with pytest.raises(RuntimeError, match='implementation for device cuda:0 not found'):
        train_and_test_step('configs/deformable_detr_pit_s.py', {'model.bbox_head.loss_cls.type': 'FocalLoss'})


def test_low_precision_values_for_mmcv_cuda_kernel_are_cast_with_a_warning(gpu_branch):
    """mmcv's CUDA deformable-attention kernel takes fp32 only: bf16 values are cast for it, and
    the user is told (the C++ kernel stands in for it here, on the CPU tensors)."""
    from test_msda import LEVELS, random_inputs

    from pit_det.ops import multi_scale_deformable_attn

    set_cuda_ops, _ = gpu_branch
    set_cuda_ops(True)
    value, shapes, starts, loc, attn = random_inputs(LEVELS[0], dtype=torch.float32)
    value = value.bfloat16()
    with pytest.warns(UserWarning, match='takes fp32 values only: torch.bfloat16 values are cast to fp32'):
        out = multi_scale_deformable_attn(cuda_looking(value), shapes, starts, loc, attn, impl='fast')
    expected = multi_scale_deformable_attn(value.float(), shapes, starts, loc, attn, impl='fast').bfloat16()
    assert out.dtype == torch.bfloat16 and torch.equal(out.as_subclass(torch.Tensor), expected)


def test_a_gpu_process_builds_no_cpu_kernel_until_a_cpu_forward(gpu_branch, monkeypatch):
    """Where a GPU is visible, switching the kernel resolves CUDA's only: the C++ CPU kernel (a
    compile of 20-45 s) is built at the first CPU forward, not in every training or benchmark process."""
    from mmcv.ops import MultiScaleDeformableAttention

    from pit_det.models.msda import set_msda_impl
    from pit_det.ops import extension

    set_cuda_ops, _ = gpu_branch
    set_cuda_ops(True)  # 'fast' runs mmcv's CUDA kernel
    builds = []
    load = extension.load_extension
    monkeypatch.setattr(extension, 'load_extension', lambda *a, **k: builds.append(1) or load(*a, **k))
    module = MultiScaleDeformableAttention(embed_dims=32, num_heads=4, num_levels=1, num_points=2, batch_first=True)
    assert set_msda_impl(module, 'fast') == 1
    assert module.kernels == {'cuda': 'mmcv-cuda'} and builds == []
    query = torch.rand(1, 4, 32)
    module(query, value=torch.rand(1, 4, 32), reference_points=torch.rand(1, 4, 1, 2),
           spatial_shapes=torch.tensor([[2, 2]]), level_start_index=torch.tensor([0]))  # fmt: skip
    assert builds == [1]


def test_the_demo_on_a_gpu_draws_host_copies_and_reaches_no_mmcv_cuda_op(gpu_branch, tmp_path, monkeypatch, capsys):
    """tools/demo.py --device cuda as a GPU runs it: the image through mmdet's test pipeline, the
    detector on CUDA tensors (made CUDA-looking after the preprocessor), its detections copied to
    the host before they are drawn and written (numpy of a CUDA tensor fails), and no mmcv CUDA op."""
    import cv2
    from tool_modules import run_in_process
    from weight_files import toy_checkpoint

    from pit_det.models import load_detector

    toy = 'configs/toy/deformable_detr_pit_s_toy.py'
    checkpoint = toy_checkpoint(tmp_path, toy)
    image = tmp_path / 'photo.png'
    cv2.imwrite(str(image), torch.randint(0, 256, (120, 160, 3), dtype=torch.uint8).numpy())
    dispatcher = sys.modules['pit_det.ops.ms_deform_attn']  # the C++ op stands in for Triton's, as above
    monkeypatch.setattr(dispatcher, 'ms_deform_attn_triton', lambda *inputs: dispatcher.ms_deform_attn(*inputs, 64))
    devices, predicted = [], []

    def on_the_gpu(config, checkpoint, device):
        devices.append(device)
        model = load_detector(config, checkpoint, 'cpu')
        preprocess, predict = model.data_preprocessor.forward, model.predict

        def to_gpu(data, training=False):
            data = preprocess(data, training)
            return dict(data, inputs=cuda_looking(data['inputs']))

        def recorded(*args, **kwargs):
            results = predict(*args, **kwargs)
            predicted.extend(type(r.pred_instances.bboxes) for r in results)
            return results

        monkeypatch.setattr(model.data_preprocessor, 'forward', to_gpu)
        monkeypatch.setattr(model, 'predict', recorded)
        return model

    out = tmp_path / 'out'
    argv = [image, toy, checkpoint, '--out', out, '--device', 'cuda', '--score-thr', '0']
    code, err = run_in_process('tools/demo.py', argv, monkeypatch, capsys, load_detector=on_the_gpu)
    assert code == 0, err[-3000:]
    assert devices == ['cuda'] and predicted == [CudaLooking]  # the detector's outputs were on the "GPU"
    records = json.loads((out / 'detections.json').read_text())
    assert len(records[0]['detections']) == 100 and (out / 'photo.png').is_file()
    _, calls = gpu_branch
    assert not any(cuda for _, cuda in calls), calls


class OnGpu(torch.Tensor):
    """A tensor that, like a CUDA one, cannot be compared with a host tensor until copied to the host."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is torch.equal:
            raise RuntimeError('Expected all tensors to be on the same device, but found at least two devices')
        return super().__torch_function__(func, types, args, kwargs or {})

    def cpu(self) -> torch.Tensor:
        return self.as_subclass(torch.Tensor)


def test_the_pretrained_check_reads_a_backbone_already_on_the_gpu(tmp_path, monkeypatch):
    """mmengine's Runner moves the model to the GPU before it initialises the weights: the R50
    check after the Pretrained init compares the file's tensors with the backbone's on the host."""
    from pit_det.checkpoint import CheckpointError, require_pretrained_loaded

    module = torch.nn.Linear(3, 2)
    torch.save(module.state_dict(), tmp_path / 'w.pth')
    module.init_cfg = dict(type='Pretrained', checkpoint=str(tmp_path / 'w.pth'))
    own = {k: v.detach().clone().as_subclass(OnGpu) for k, v in module.state_dict().items()}
    monkeypatch.setattr(module, 'state_dict', lambda: own)
    require_pretrained_loaded(module)
    own['bias'] = (own['bias'].cpu() + 1).as_subclass(OnGpu)  # a tensor the file did not give
    with pytest.raises(CheckpointError, match=r'w\.pth: 1 of 2 backbone tensors did not load'):
        require_pretrained_loaded(module)


class OnSecondGpu(CudaLooking):
    """A CUDA-looking tensor on cuda:1."""

    @property
    def device(self) -> torch.device:
        return torch.device('cuda', 1)


def test_kernels_launch_on_their_tensors_device(monkeypatch):
    """Values on cuda:1 while cuda:0 is current (``--device cuda:1``, or one process driving two GPUs):
    mmcv's CUDA kernel and Triton launch on the current device, so each launch runs with the values'
    device made current (the device contexts entered are recorded)."""
    import importlib

    ms_deform_attn_op = importlib.import_module('pit_det.ops.ms_deform_attn_op')
    triton_kernel = importlib.import_module('pit_det.ops.ms_deform_attn_triton')

    events = []

    class Device:
        def __init__(self, device):
            self.device = torch.device(device)

        def __enter__(self):
            events.append(f'enter {self.device}')

        def __exit__(self, *exc):
            events.append(f'exit {self.device}')

    class Ext:  # mmcv's extension
        def ms_deform_attn_forward(self, *args, **kwargs):
            events.append('mmcv forward')

        def ms_deform_attn_backward(self, *args, **kwargs):
            events.append('mmcv backward')

    class Kernel:  # a Triton kernel: kernel[grid](...)
        def __getitem__(self, grid):
            return lambda *args, **kwargs: events.append('triton')

    monkeypatch.setattr(torch.cuda, 'device', Device)
    monkeypatch.setattr(ms_deform_attn_op, '_mmcv_ext', Ext)
    value = torch.zeros(1, 4, 2, 8).as_subclass(OnSecondGpu)
    shapes, starts = torch.tensor([[2, 2]]), torch.tensor([0])
    loc, attn = torch.rand(1, 3, 2, 1, 4, 2), torch.rand(1, 3, 2, 1, 4)
    ms_deform_attn_op._forward_cuda(value, shapes, starts, loc, attn, 64)
    ms_deform_attn_op._backward_cuda(value, shapes, starts, loc, attn, torch.zeros(1, 3, 16), 64)
    triton_kernel._launch(Kernel(), value, shapes, starts, loc, attn)
    assert events == [
        e for what in ('mmcv forward', 'mmcv backward', 'triton') for e in ('enter cuda:1', what, 'exit cuda:1')
    ]


def test_timing_waits_for_and_measures_the_device_asked(monkeypatch):
    """The benchmark on cuda:1: each timed call waits for cuda:1's queue (not the current device's),
    peak memory is cuda:1's, and fp32 is IEEE fp32 (cuDNN's convolutions default to TF32)."""
    from pit_det import benchmark as bm

    asked = []
    for name in ('synchronize', 'reset_peak_memory_stats'):
        monkeypatch.setattr(torch.cuda, name, lambda device=None, name=name: asked.append((name, device)))
    monkeypatch.setattr(torch.cuda, 'max_memory_allocated', lambda device=None: asked.append(('peak', device)) or 0)
    with bm.peak_memory('cuda:1'):
        bm.time_calls(lambda: None, warmup=0, iters=1, device='cuda:1')
    assert asked == [
        ('reset_peak_memory_stats', 'cuda:1'),
        ('synchronize', 'cuda:1'),
        ('synchronize', 'cuda:1'),
        ('peak', 'cuda:1'),
    ]
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32  # process-wide flags
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        bm.ieee_fp32('cuda:1')
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
