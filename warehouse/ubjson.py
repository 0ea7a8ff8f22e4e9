"""A UBJSON decoder for xgboost's model files (``model.ubj``), so that the online reader reads a registered model
without importing xgboost (and the SciPy and scikit-learn it pulls in).

``loads(data)`` returns what ``json.loads(booster.save_raw("json"))`` returns for the same model, except that
floats are the exact float32 (or float64) values stored, where the JSON text holds their shortest decimal form:
both round to the same float32. Supports the whole of UBJSON draft 12 as xgboost writes it: ``Z N T F i U I l L
d D C S H``, arrays and objects, with the optimised ``$type`` and ``#count`` containers (typed numeric arrays are
read in one ``numpy.frombuffer``). Malformed input raises ``ValueError`` naming the offset.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_NUMBERS: dict[int, np.dtype[Any]] = {
    ord("i"): np.dtype("i1"),
    ord("U"): np.dtype("u1"),
    ord("I"): np.dtype(">i2"),
    ord("l"): np.dtype(">i4"),
    ord("L"): np.dtype(">i8"),
    ord("d"): np.dtype(">f4"),
    ord("D"): np.dtype(">f8"),
}
_CONSTANTS: dict[int, Any] = {ord("Z"): None, ord("T"): True, ord("F"): False}
MAX_DEPTH = 256


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.at = 0

    def fail(self, what: str) -> ValueError:
        return ValueError(f"not a UBJSON model: {what} at byte {self.at}")

    def marker(self) -> int:
        while True:
            if self.at >= len(self.data):
                raise self.fail("unexpected end")
            byte = self.data[self.at]
            self.at += 1
            if byte != ord("N"):  # no-op
                return byte

    def number(self, kind: int) -> Any:
        dtype = _NUMBERS.get(kind)
        if dtype is None:
            raise self.fail(f"type {chr(kind)!r} where a number belongs")
        end = self.at + dtype.itemsize
        if end > len(self.data):
            raise self.fail("unexpected end")
        value = np.frombuffer(self.data[self.at : end], dtype=dtype)[0].item()
        self.at = end
        return value

    def length(self) -> int:
        value = self.number(self.marker())
        if not isinstance(value, int) or value < 0:
            raise self.fail(f"length {value!r}")
        return int(value)

    def text(self) -> str:
        size = self.length()
        end = self.at + size
        if end > len(self.data):
            raise self.fail("unexpected end")
        value = bytes(self.data[self.at : end]).decode("utf-8")
        self.at = end
        return value

    def value(self, kind: int, depth: int) -> Any:
        if kind in _CONSTANTS:
            return _CONSTANTS[kind]
        if kind in _NUMBERS:
            return self.number(kind)
        if kind in (ord("S"), ord("H")):
            return self.text()
        if kind == ord("C"):
            return chr(self.number(ord("U")))
        if depth > MAX_DEPTH:
            raise self.fail("nesting deeper than 256")
        if kind == ord("["):
            return self.array(depth + 1)
        if kind == ord("{"):
            return self.mapping(depth + 1)
        raise self.fail(f"unknown type {chr(kind)!r}")

    def _header(self) -> tuple[int | None, int | None]:
        typed = count = None
        if self.data[self.at] == ord("$"):
            self.at += 1
            typed = self.marker()
        if self.at < len(self.data) and self.data[self.at] == ord("#"):
            self.at += 1
            count = self.length()
        elif typed is not None:
            raise self.fail("a typed container without a count")
        return typed, count

    def array(self, depth: int) -> list[Any]:
        typed, count = self._header()
        if count is None:
            out = []
            while (kind := self.marker()) != ord("]"):
                out.append(self.value(kind, depth))
            return out
        if typed in _NUMBERS:
            dtype = _NUMBERS[typed]
            end = self.at + count * dtype.itemsize
            if end > len(self.data):
                raise self.fail("unexpected end")
            values = np.frombuffer(self.data[self.at : end], dtype=dtype).tolist()
            self.at = end
            return values
        return [self.value(typed if typed is not None else self.marker(), depth) for _ in range(count)]

    def mapping(self, depth: int) -> dict[str, Any]:
        typed, count = self._header()
        out: dict[str, Any] = {}
        if count is None:
            while self.data[self.at] != ord("}"):
                key = self.text()
                out[key] = self.value(self.marker(), depth)
            self.at += 1
            return out
        for _ in range(count):
            key = self.text()
            out[key] = self.value(typed if typed is not None else self.marker(), depth)
        return out


def value_at(data: bytes, offset: int) -> Any:
    """Decode the one value that starts at byte ``offset`` of ``data`` (the marker included), e.g. a field found
    by searching for its key, without decoding the rest; ``ValueError`` when it is not one."""
    reader = _Reader(data)
    reader.at = offset
    try:
        return reader.value(reader.marker(), 0)
    except (IndexError, UnicodeDecodeError) as exc:
        raise reader.fail(f"malformed ({exc})") from None


def loads(data: bytes) -> Any:
    """Decode one UBJSON document (see the module docstring); ``ValueError`` when it is not one."""
    reader = _Reader(data)
    try:
        value = reader.value(reader.marker(), 0)
    except (IndexError, UnicodeDecodeError) as exc:
        raise reader.fail(f"malformed ({exc})") from None
    if reader.at != len(reader.data):
        raise reader.fail("trailing bytes")
    return value
