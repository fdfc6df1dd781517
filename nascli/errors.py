"""User-caused errors. The CLI prints them as one line and exits 2; anything else is a bug."""


class NascliError(Exception):
    """An error the user can fix. The message names the file and the field at fault."""

    exit_code = 2


class DataError(NascliError):
    """A dataset file is missing, malformed, empty or inconsistent."""


class SpecError(NascliError):
    """A YAML spec or a command option has an invalid value."""


class CheckpointError(NascliError):
    """A checkpoint file is missing, foreign or incompatible."""


class CacheError(NascliError):
    """A feature cache is stale, truncated, corrupt or foreign."""


class UnknownNameError(NascliError):
    """A name (method, backbone, space, zoo entry) is not registered."""


def unknown_name(kind: str, name: str, known) -> UnknownNameError:
    """Builds the error for a name missing from a registry, listing the valid ones."""
    return UnknownNameError(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(known))}")
