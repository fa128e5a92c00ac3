"""Errors about the user's inputs (files, configs, data). The tools print their message and exit 1
without a traceback: the message itself names the file, entry or field and the fix."""

import sys
from typing import Callable, Optional


class PitDetError(RuntimeError):
    """A problem with an input that the user can fix; its message says which and how."""


class CheckpointError(PitDetError):
    """A weight file or checkpoint that cannot be read safely or does not fit the model."""


class DatasetError(PitDetError):
    """An annotation file or data set that cannot be trained or evaluated on as it is."""


def run_tool(main: Callable[[], Optional[int]]) -> int:
    """Run a tool's ``main`` and return its exit code (``main``'s, when it returns an int, else 0).

    A :class:`PitDetError` or ``FileNotFoundError`` is printed as ``error: <message>`` on stderr
    with exit code 1, since its message already names the input and what is wrong; other errors
    keep their traceback (they are bugs).
    """
    try:
        code = main()
    except (PitDetError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    return code if isinstance(code, int) else 0
