"""Exceptions that the command line turns into a one-line ``error:`` message and exit status 2."""


class InputError(ValueError):
    """Bad user input: unreadable file, invalid image, incompatible stacks or a nonsense option."""
