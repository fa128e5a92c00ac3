"""Errors about the user's inputs (files, configs, data). The tools print their message and exit 1
without a traceback: the message itself names the file, entry or field and the fix."""

from typing import Callable, Optional

from pit_det_deploy import errors as deploy_errors


class PitDetError(RuntimeError):
    """A problem with an input that the user can fix; its message says which and how."""


class CheckpointError(PitDetError):
    """A weight file or checkpoint that cannot be read safely or does not fit the model."""


class DatasetError(PitDetError):
    """An annotation file or data set that cannot be trained or evaluated on as it is."""


def run_tool(main: Callable[[], Optional[int]]) -> int:
    """:func:`pit_det_deploy.errors.run_tool` for the tools that train, test and export: a
    :class:`PitDetError`, a ``DeployError`` or an OSError about a user's path is printed as
    ``error: <message>`` with exit code 1; other errors keep their traceback (they are bugs)."""
    return deploy_errors.run_tool(main, (PitDetError, deploy_errors.DeployError))
