"""The base of the project's own errors: each message names the file or config key and the problem."""


class DigitError(Exception):
    """Bad input (a file, a config key, a value): tools print the message as one ``error:`` line."""


class ConfigError(DigitError, ValueError):
    """A config file or KEY VALUE override is missing, malformed or names an unknown key."""
