"""The deploy package's one error type: an input the user can fix (a file that is no pit-det export,
an image that does not fit the model, a runtime that is not installed). Its message names the input
and the fix; the tools print it in one line. Anything else is a bug and keeps its traceback."""


class DeployError(ValueError):
    """A problem with an input that the user can fix; a ``ValueError`` for callers that catch those."""
