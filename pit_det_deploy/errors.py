"""The deploy package's one error type: an input the user can fix (a file that is no pit-det export,
an image that does not fit the model, a runtime that is not installed). Its message names the input
and the fix; the tools print it in one line (:func:`run_tool`). Anything else is a bug and keeps its
traceback."""

import sys
from typing import Callable, Optional, Tuple


class DeployError(ValueError):
    """A problem with an input that the user can fix; a ``ValueError`` for callers that catch those."""


def unloadable(path: str, err: Exception) -> DeployError:
    """The error for a file that onnx or a runtime cannot load as a model, naming the file."""
    return DeployError(f'{path}: cannot load as an ONNX model: {err}')


# OSErrors about a path the user gave (a missing file, a folder where a file goes, a file where a
# folder goes, no permission): their message names the path.
PATH_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, FileExistsError, PermissionError)


def run_tool(main: Callable[[], Optional[int]], user_errors: Tuple[type, ...] = (DeployError,)) -> int:
    """Run a tool's ``main`` and return its exit code (``main``'s, when it returns an int, else 0).

    An error in ``user_errors`` or :data:`PATH_ERRORS` is printed as ``error: <message>`` on stderr
    with exit code 1, since its message already names the input and what is wrong; other errors keep
    their traceback (they are bugs).
    """
    try:
        code = main()
    except (*user_errors, *PATH_ERRORS) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    return code if isinstance(code, int) else 0
