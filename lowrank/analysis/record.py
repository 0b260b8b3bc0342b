"""The base of the analysis report's records: ``to_dict()`` to plain JSON types (tuples become lists) and
``from_dict()`` back, ``Record.from_dict(r.to_dict()) == r``; keys with defaults may be missing (reports written
before those fields existed)."""

from __future__ import annotations

from dataclasses import MISSING, fields

from lowrank.errors import LowrankError


def _plain(value):
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return value


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


class Record:
    """to_dict/from_dict for flat records; records with nested records override ``_nested``."""

    _nested: dict = {}

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict):
        if not isinstance(data, dict):
            raise LowrankError(f"{cls.__name__} record must be a JSON object, got {type(data).__name__}")
        names = [f.name for f in fields(cls) if f.name in data or f.default is MISSING]
        missing = [n for n in names if n not in data]
        if missing:
            raise LowrankError(f"{cls.__name__} record lacks keys {missing}")
        values = {}
        for name in names:
            raw = data[name]
            nested = cls._nested.get(name)
            if nested is None or raw is None:
                values[name] = dict(raw) if isinstance(raw, dict) else _tuples(raw)
            elif isinstance(raw, list):
                values[name] = tuple(nested.from_dict(item) for item in raw)
            else:
                values[name] = nested.from_dict(raw)
        return cls(**values)
