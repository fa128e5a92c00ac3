"""A tool script loaded as a module, its ``main`` not run: the tests call its functions and parser."""

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_tool(path: str) -> ModuleType:
    """``path``: the script, relative to the repository root (e.g. 'tools/deploy/quantize.py')."""
    spec = importlib.util.spec_from_file_location(path.removesuffix('.py').replace('/', '_'), ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
