"""The errors attprune raises on purpose: each says what is wrong and how to fix it.

Every one of them derives from ``AttpruneError``: the CLI prints its message and exits 2,
while anything else (a bug) keeps its traceback. They also derive from the built-in type a
caller would expect (``ValueError`` for bad input, ``FileNotFoundError`` for a missing path,
``ImportError`` for a missing optional package), so ``except ValueError`` keeps working.

>>> try:
...     attprune.make_plan(scores, ffn=1.5)
... except attprune.InputError as err:
...     print(err)
ffn must be a fraction to remove in [0, 1), got 1.5
"""

from __future__ import annotations


class AttpruneError(Exception):
    """Base of every error attprune raises deliberately (a message for the user, not a bug)."""


class InputError(AttpruneError, ValueError):
    """An argument, a batch, a file's content or a model that attprune cannot take."""


class InputTypeError(InputError, TypeError):
    """An input of the wrong type (a batch that is not a dict of tensors...)."""


class MissingFileError(AttpruneError, FileNotFoundError):
    """A path the user gave does not exist."""


class MissingDependencyError(AttpruneError, ImportError):
    """An optional package (an extra) that this feature needs is not installed."""


class UnsupportedModelError(InputError):
    """The model has no registered architecture, or the architecture does not match it."""


class PlanMismatchError(InputError):
    """A plan does not fit the model it is applied to."""


class CheckpointError(InputError):
    """A compact checkpoint is missing, incomplete or does not fit its plan."""


class ResumeMismatchError(InputError):
    """A partial attribution run was made with other settings, data or weights."""


class AdaptedMismatchError(InputError):
    """A saved adapted task does not fit the pre-trained model it is applied to, or is damaged."""


def missing_dependency(package: str, what: str, extra: str | None = None) -> MissingDependencyError:
    """The error for ``what`` needing ``package``; names the extra that installs it."""
    hint = f"pip install 'attprune[{extra}]'" if extra else f"pip install {package}"
    return MissingDependencyError(f"{what} needs {package}: {hint}")


class ExportError(InputError):
    """A model that an export format cannot express (the message names the plan that would fit)."""
