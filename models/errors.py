"""Errors a user can cause and fix: a missing file, a bad card, an unknown name.

Every command-line entry point turns a ``GGAUserError`` into one line on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""


class GGAUserError(Exception):
    """Base of every error whose message tells the user what to fix."""


class DataError(GGAUserError, ValueError):
    """A data file or directory is missing, truncated or not in the expected format."""


class ModelNotFoundError(GGAUserError, LookupError):
    """No model folder of that name in the repository."""


class ModelLoadError(GGAUserError, ValueError):
    """A model folder exists but its card and weights do not agree."""


class ImageError(GGAUserError, ValueError):
    """A file is not an image, or cannot be converted to the model's input."""


class RecipeError(GGAUserError, ValueError):
    """A training recipe is missing a field or names an unknown option."""


class CheckpointError(GGAUserError, ValueError):
    """A training checkpoint is missing, corrupt, or belongs to another recipe."""
