"""Exceptions that the CLI turns into a one-line error and a non-zero exit."""


class AmbError(Exception):
    """Base class: a problem with the user's input, not a bug in ambcore."""


class DataError(AmbError, ValueError):
    """A dataset file that does not have the expected layout (the message names file, split, key)."""


class UnsafePickleError(DataError):
    """A pickle that asks for an object outside the allow-list; its payload never runs."""


class ModelConfigError(AmbError, ValueError):
    """A model config that cannot be built (e.g. feature dims that do not match the data)."""
