"""Latency, memory, parameters and FLOPs of detectors built from configs
(``tools/analysis/benchmark.py``): the measurements and their conventions (:mod:`.measure`), the
benchmark's method (:mod:`.runner`), where the time goes (:mod:`.profiling`), training
throughput (:mod:`.training`) and the printed table and figure (:mod:`.report`)."""

from .measure import *  # noqa: F401,F403  the measurement helpers, as bm.time_calls etc.
from .measure import build_detector, environment
from .profiling import STAGES, count_cuda_events, profile_call, stage_marks, stage_times
from .runner import Settings, benchmark, benchmark_config, label, variant
from .training import benchmark_training, coco_schedule, synthetic_batches, train_throughput

__all__ = [
    'STAGES',
    'Settings',
    'benchmark',
    'benchmark_config',
    'benchmark_training',
    'build_detector',
    'coco_schedule',
    'count_cuda_events',
    'environment',
    'label',
    'profile_call',
    'stage_marks',
    'stage_times',
    'synthetic_batches',
    'train_throughput',
    'variant',
]
