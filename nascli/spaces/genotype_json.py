"""Reading a genotype's JSON, shared by every space: the header checks, and field errors as one line."""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import asdict

from ..errors import SpecError


class JsonGenotype:
    """Base of every space's genotype dataclass: its JSON is its fields (what run.db and exports hold)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def read_fields(text, source: str, space: str, version: int) -> dict:
    """The genotype's fields from JSON text or a mapping, with its `space` and `version` checked."""
    try:
        data = json.loads(text) if isinstance(text, str) else text
    except (ValueError, RecursionError) as e:
        raise SpecError(f"{source}: malformed JSON ({getattr(e, 'msg', type(e).__name__)})") from None
    if not isinstance(data, dict):
        raise SpecError(f"{source}: top level must be an object with 'space' and 'version'")
    if data.get("space") != space:
        raise SpecError(f"{source}: field 'space' is {data.get('space')!r}, expected {space!r}")
    if data.get("version") != version:
        raise SpecError(f"{source}: field 'version' {data.get('version')!r} is not {version}")
    return data


@contextmanager
def fields_of(source: str):
    """A field of the wrong type, length or value while building a genotype, as one SpecError line."""
    try:
        yield
    except KeyError as e:
        raise SpecError(f"{source}: field {e} is missing") from None
    except (TypeError, ValueError, IndexError, OverflowError) as e:
        raise SpecError(f"{source}: a field is malformed ({e})") from None
