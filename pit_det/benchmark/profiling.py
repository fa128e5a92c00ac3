"""Where the milliseconds of one ``test_step`` go (``tools/analysis/benchmark.py --profile``): wall
time per stage of the detector, the ops taking the most time, and on a GPU what the call asks of
it: kernel launches, CUDA graph launches and host-device synchronisations.

Stages, in the order mmdet 3.3 runs them (``BaseModel.test_step``, ``DetectionTransformer.predict``
and ``forward_transformer``; never nested):

* ``preprocess``: the data preprocessor (to the device, normalisation, batching);
* ``backbone``;
* ``neck + encoder``: the neck, ``pre_transformer`` (masks, position embeddings, flattening) and
  the encoder layers;
* ``proposals``: ``pre_decoder``, two-stage's first-stage head on every encoder token and the
  top-k that picks the decoder's queries;
* ``decoder``;
* ``head + post-processing``: ``bbox_head.predict``, the class and box branches, the top-k over
  queries x classes and box decoding.

A stage's time runs from a marker at its entry to one at its exit: CUDA events on a GPU (the
stream's time between them: no synchronisation is added, and for a launch-bound model it is the
host's time), ``perf_counter`` on CPU. What lies between stages is ``other``.
"""

import functools
import statistics
import time
from contextlib import contextmanager, nullcontext
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import torch
from torch import nn
from torch.autograd import DeviceType

from .measure import synchronize

STAGES = ('preprocess', 'backbone', 'neck + encoder', 'proposals', 'decoder', 'head + post-processing')
# Where each stage runs: (stage, the detector's submodule holding the method ('' for the detector), method).
STAGE_CALLS = (
    ('preprocess', 'data_preprocessor', 'forward'),
    ('backbone', 'backbone', 'forward'),
    ('neck + encoder', 'neck', 'forward'),
    ('neck + encoder', '', 'pre_transformer'),
    ('neck + encoder', '', 'forward_encoder'),
    ('proposals', '', 'pre_decoder'),
    ('decoder', '', 'forward_decoder'),
    ('head + post-processing', 'bbox_head', 'predict'),
)
RANGE = 'stage: '  # record_function name prefix of a stage, as the profiler's traces show it
CALL = 'benchmark: profiled call'  # the record_function range of the whole call

# Names of the CUDA runtime and driver calls (host side) and device activities in torch.profiler's events.
LAUNCHES = ('cudaLaunchKernel', 'cuLaunchKernel', 'cudaLaunchCooperativeKernel', 'cuLaunchCooperativeKernel')
GRAPH_LAUNCHES = ('cudaGraphLaunch', 'cuGraphLaunch')
COPIES = ('Memcpy', 'Memset')  # device activities that are not kernels


class Clock:
    """Timestamps on the device's timeline: CUDA events (recorded in stream order, read after one
    synchronisation at the end) on a GPU, ``perf_counter`` on CPU."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith('cuda')

    def now(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def ms(self, start, end) -> float:
        return start.elapsed_time(end) if self.cuda else (end - start) * 1e3


def _marked(stage: str, fn: Callable, clock: Optional[Clock], spans: list) -> Callable:
    @functools.wraps(fn)
    def call(*args, **kwargs):
        start = clock.now() if clock else None
        with torch.profiler.record_function(RANGE + stage):
            out = fn(*args, **kwargs)
        if clock:
            spans.append((stage, start, clock.now()))
        return out

    return call


@contextmanager
def stage_marks(model: nn.Module, clock: Optional[Clock] = None) -> Iterator[List[tuple]]:
    """Inside, every stage method of ``model`` (``STAGE_CALLS``) runs in a ``record_function`` range
    named ``'stage: NAME'`` and, with a clock, appends ``(stage, start, end)`` to the yielded list.

    The methods are wrapped on the instances and restored on exit; nothing changes what they compute.
    """
    spans: list = []
    patched = []
    for stage, owner_name, method in STAGE_CALLS:
        owner = getattr(model, owner_name, None) if owner_name else model
        if owner is None:  # a detector without a neck
            continue
        patched.append((owner, method, owner.__dict__.get(method)))
        setattr(owner, method, _marked(stage, getattr(owner, method), clock, spans))
    try:
        yield spans
    finally:
        for owner, method, own in patched:
            if own is None:
                delattr(owner, method)
            else:
                setattr(owner, method, own)


def stage_times(
    model: nn.Module, fn: Callable[[], object], device: str, iters: int, progress: Optional[Callable[[], None]] = None
) -> Dict[str, float]:
    """Median wall ms per stage over ``iters`` calls of ``fn`` (which runs ``model``), with
    ``total`` (the median call) and ``other`` (``total`` less the stages: between them);
    ``progress()`` after each call."""
    clock = Clock(device)
    calls = []
    with stage_marks(model, clock) as spans:
        for _ in range(iters):
            spans.clear()
            synchronize(device)
            start = clock.now()
            fn()
            end = clock.now()
            synchronize(device)
            ms = dict.fromkeys(STAGES, 0.0)
            for stage, a, b in spans:
                ms[stage] += clock.ms(a, b)
            calls.append(dict(ms, total=clock.ms(start, end)))
            if progress is not None:
                progress()
    result = {key: statistics.median(c[key] for c in calls) for key in STAGES}
    total = statistics.median(c['total'] for c in calls)
    return dict(result, other=total - sum(result.values()), total=total)


def count_cuda_events(events: Sequence) -> Dict[str, object]:
    """What one profiled call asked of the GPU.

    Args:
        events: torch.profiler's events (``prof.events()``): runtime and driver calls on the host
            (``cudaLaunchKernel``, ``cudaStreamSynchronize``, ...), kernels and copies on the
            device, and the ``stage: NAME`` ranges of :func:`stage_marks`. Where a ``CALL`` range
            is among them, host calls count only inside it: the profiler synchronises the device
            when it stops, which is no part of the call.

    Returns:
        dict: ``kernel_launches`` (host calls launching one kernel), ``graph_launches`` (CUDA graph
        replays, each running many kernels), ``kernels`` (kernels that ran on the device, however
        launched), ``syncs`` (host waits: ``cuda*Synchronize``), ``dtoh_copies`` (device-to-host
        copies: each ``.item()``, ``.cpu()`` or ``.tolist()``), and with stage ranges
        ``kernel_launches_by_stage``.
    """
    host = [e for e in events if e.device_type == DeviceType.CPU]
    call = next((e.time_range for e in host if e.name == CALL), None)
    if call is not None:
        host = [e for e in host if call.start <= e.time_range.start <= call.end]
    device = [e for e in events if e.device_type == DeviceType.CUDA]
    launches = [e for e in host if e.name.startswith(LAUNCHES)]
    counts = dict(
        kernel_launches=len(launches),
        graph_launches=sum(e.name.startswith(GRAPH_LAUNCHES) for e in host),
        kernels=sum(map(_is_kernel, device)),
        syncs=sum(e.name.startswith('cu') and 'Synchronize' in e.name for e in host),  # cuda* and cu* APIs
        dtoh_copies=sum(e.name.startswith('Memcpy DtoH') for e in device),
    )
    ranges = [(e.name[len(RANGE) :], e.time_range) for e in host if e.name.startswith(RANGE)]
    if ranges:
        # A launch belongs to the stage whose range (on the host's clock) it starts in.
        by_stage = dict.fromkeys((stage for stage, _ in ranges), 0)  # stages in order, once each
        for stage, span in ranges:
            by_stage[stage] += sum(span.start <= e.time_range.start <= span.end for e in launches)
        counts['kernel_launches_by_stage'] = by_stage
    return counts


def _is_kernel(event) -> bool:
    """A device event that is a kernel: by its activity type where torch records it (2.13), else by
    name, leaving out copies, the GPU side of ``record_function`` ranges and synchronisation records."""
    kind = getattr(event, 'activity_type', None)
    if kind is not None:
        return kind == 'kernel'
    return not (event.name.startswith((*COPIES, RANGE, CALL)) or 'Sync' in event.name or 'Stream Wait' in event.name)


def profile_call(
    fn: Callable[[], object], device: str, top: int = 12, model: Optional[nn.Module] = None
) -> Dict[str, object]:
    """One call of ``fn`` under torch.profiler.

    Args:
        fn: the call (a ``test_step``).
        device: 'cpu' or 'cuda'; on CUDA the device's activity is recorded too.
        top: how many ops to list.
        model: the detector ``fn`` runs, eager; its stages are then marked (:func:`stage_marks`)
            and the launches split by stage. None for a compiled call (one graph, no stages).

    Returns:
        dict: ``top_ops``, the ``top`` ops by self time on the host, largest first (on CUDA with
        their kernels' time, ``device_ms``); on CUDA also ``cuda`` (:func:`count_cuda_events`).
    """
    cuda = device.startswith('cuda')
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    with (
        stage_marks(model) if model is not None else nullcontext(),
        torch.profiler.profile(activities=activities) as prof,
        torch.profiler.record_function(CALL),
    ):
        fn()
    # (Leaving the profile synchronises the device: the call's kernels are all recorded.) A range's
    # self time is the Python between its ops, not an op.
    ops = [e for e in prof.key_averages() if not e.key.startswith((RANGE, CALL))]
    ops.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops) or 1.0
    top_ops = []
    for e in ops[:top]:
        op = dict(op=e.key, self_ms=e.self_cpu_time_total / 1e3, share=e.self_cpu_time_total / total, calls=e.count)
        if cuda:
            op['device_ms'] = e.self_device_time_total / 1e3
        top_ops.append(op)
    result = dict(top_ops=top_ops)
    if cuda:
        result['cuda'] = count_cuda_events(prof.events())
    return result
