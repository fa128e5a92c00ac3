"""Latency, memory, parameters and FLOPs of detectors built from configs
(``tools/benchmark_latency.py``): the measurements and their conventions (:mod:`.measure`) and the
benchmark's method (:mod:`.runner`)."""
from .measure import *  # noqa: F401,F403  the measurement helpers, as bm.time_calls etc.
from .measure import build_detector, environment
from .runner import Settings, benchmark, benchmark_config, label, variant

__all__ = ['Settings', 'benchmark', 'benchmark_config', 'build_detector', 'environment', 'label', 'variant']
