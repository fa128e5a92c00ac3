"""A tool script loaded as a module: its ``main`` not run (the tests call its functions and parser), or
run in this process as ``python tool argv`` runs it, which saves the seconds a new process spends
importing torch and OpenMMLab."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_tool(path: str) -> ModuleType:
    """``path``: the script, relative to the repository root (e.g. 'tools/deploy/quantize.py')."""
    spec = importlib.util.spec_from_file_location(path.removesuffix('.py').replace('/', '_'), ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_in_process(tool: str, argv, monkeypatch, capsys, **replace):
    """``tool`` as ``python tool argv`` runs it, through the ``run_tool`` it imports (its own user
    errors: one line, exit 1), with the module attributes ``replace`` names swapped.

    Returns:
        its exit code and stderr.
    """
    module = load_tool(tool)
    for name, value in replace.items():
        monkeypatch.setattr(module, name, value)
    monkeypatch.setattr(sys, 'argv', [tool, *map(str, argv)])
    code = module.run_tool(module.main)
    return code, capsys.readouterr().err
