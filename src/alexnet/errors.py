"""The errors the tool raises on purpose.

`UserError` is the one base class of every problem the person running the tool can cause and fix:
a bad recipe or flag, missing or unreadable data, an unknown device, a checkpoint that is corrupt
or of another network, a run folder that cannot be used as asked, an export or report that
cannot be written. Its message is one line that names the culprit; the CLI prints it and exits
with status 2, and catches no other class for that. Each part of the package has its own
subclass (`RecipeError`, `DataError`, ...), so callers can tell them apart.
"""

from __future__ import annotations


class UserError(ValueError):
    """A problem the user can fix; the message is one line naming the file, flag or field."""


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite; the last good checkpoint is kept."""
