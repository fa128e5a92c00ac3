#!/usr/bin/env python3
"""A C++ compiler for mmcv's build (``CXX``): the torch headers that mmcv's ops include first
(``pytorch_cpp_helper.hpp``, which includes ``torch/types.h``) are parsed once into a GCC
precompiled header per set of compile flags, not once in each of the build's 77 files.

tools/setup/mmcv_variant.py sets ``CXX`` to this file for the mmcv build, and ``PIT_DET_CXX`` to the
compiler ``CXX`` named before (default ``c++``). Every call it does not recognise runs that compiler
unchanged: links, CUDA host compiles, each file whose first ``#include`` is not that header, and
every call when ``PIT_DET_PCH_DIR`` is unset. For a file whose first include is, it adds
``-include <dir>/pytorch_cpp_helper.hpp`` where ``<dir>`` (under ``PIT_DET_PCH_DIR``, a folder the
set-up makes for one build and deletes after it: GCC does not check that the headers inside a
precompiled header are unchanged) holds the precompiled header for these flags, built on first use
under a file lock (the build compiles in parallel). GCC uses a precompiled header only when the
flags that matter agree, and otherwise parses the header as text (``-Winvalid-pch`` says so in the
log), so the objects are the same either way. If the precompiled header cannot be built, the file
is compiled without it.
"""

import fcntl
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Tuple

HEADER = 'pytorch_cpp_helper.hpp'
SOURCES = ('.cpp', '.cc', '.cxx')
FIRST_INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', re.M)


def split(args: List[str]) -> Optional[Tuple[List[str], Path]]:
    """(the flags that shape a translation unit, the source) of a one-source compile, else None:
    without the source, its object (-o) and its dependency file (-MMD -MF, -MT)."""
    if '-c' not in args:
        return None
    flags, sources, skip = [], [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in ('-o', '-MF', '-MT', '-MQ'):
            skip = True
        elif arg in ('-c', '-MMD', '-MD'):
            continue
        elif arg.endswith(SOURCES) and not arg.startswith('-'):
            sources.append(Path(arg))
        else:
            flags.append(arg)
    return (flags, sources[0]) if len(sources) == 1 else None


def first_include(source: Path) -> Optional[str]:
    match = FIRST_INCLUDE.search(source.read_text(errors='replace'))
    return match.group(1) if match else None


def find_header(flags: List[str]) -> Optional[Path]:
    for i, arg in enumerate(flags):
        folder = arg[2:] if arg.startswith('-I') and len(arg) > 2 else flags[i + 1] if arg == '-I' else None
        if folder and (Path(folder) / HEADER).is_file():
            return Path(folder) / HEADER
    return None


def precompiled(cxx: str, flags: List[str], header: Path, root: Path) -> Optional[Path]:
    """``<root>/<key>/pytorch_cpp_helper.hpp`` with its ``.gch`` beside it, built once for these flags."""
    key = hashlib.sha256('\0'.join([cxx, *flags, str(header.resolve())]).encode()).hexdigest()[:16]
    folder = root / key
    folder.mkdir(parents=True, exist_ok=True)
    stub, gch = folder / HEADER, folder / (HEADER + '.gch')
    with open(folder / 'lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / 'failed').exists():
            return None
        if not gch.exists():
            stub.write_text(f'#include "{header.resolve()}"\n')
            tmp = folder / (HEADER + '.gch.tmp')
            proc = subprocess.run(
                [cxx, *flags, '-x', 'c++-header', str(stub), '-o', str(tmp)], capture_output=True, text=True
            )
            if proc.returncode:
                (folder / 'failed').write_text(proc.stderr)
                print(f'pch_cxx: no precompiled header ({folder / "failed"}); compiling without it', file=sys.stderr)
                return None
            tmp.rename(gch)
    return stub


def main(args: List[str]) -> None:
    cxx = os.environ.get('PIT_DET_CXX') or 'c++'
    root = os.environ.get('PIT_DET_PCH_DIR')
    parts = split(args)
    if root and parts is not None and first_include(parts[1]) == HEADER:
        header = find_header(parts[0])
        stub = header and precompiled(cxx, parts[0], header, Path(root))
        if stub:
            args = ['-include', str(stub), '-Winvalid-pch', *args]
    os.execvp(cxx, [cxx, *args])


if __name__ == '__main__':
    main(sys.argv[1:])
