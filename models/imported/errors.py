"""The one error an import raises: a user error whose message names the problem and the remedy."""

from models.errors import GGAUserError


class ModelImportError(GGAUserError, ValueError):
    """A model file cannot be imported as it is; nothing was written to the repository."""
