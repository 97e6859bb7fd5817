"""Pack and unpack the flattened Verilog vectors of Amaranth `data` layouts.

Amaranth turns each struct-typed port into one bit vector (``req__payload``, ``ctx``, ...). The
testbenches build and decode those vectors with the very `data.StructLayout`s the RTL uses
(`rtl.translation.layouts`), so a layout change cannot silently desynchronise RTL and testbench::

    from rtl.translation.layouts import request_layout
    word = pack(request_layout(8), tag=3, gla=0x1000, access=Access.READ, cpl=0)
    fields = unpack(request_layout(8), word)     # {"tag": 3, "gla": 0x1000, "access": ..., ...}

Nested layouts take and give nested dicts; enum fields take members or ints and decode to the
member (an int when the value names no member); signed fields decode sign-extended. `pack`
rejects unknown field names and values that do not fit, so a typo fails loudly.

Both functions precompile a layout once (cached by identity of the layout's field list), since
the long random tests decode a response per cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

from amaranth.hdl import Shape
from amaranth.lib import data
from amaranth.lib import enum as am_enum

__all__ = ["pack", "unpack", "field_names", "layout_width"]


class _Field:
    __slots__ = ("name", "offset", "width", "mask", "signed", "enum", "sub")

    def __init__(self, name, offset, width, signed=False, enum=None, sub=None):
        self.name = name
        self.offset = offset
        self.width = width
        self.mask = (1 << width) - 1
        self.signed = signed
        self.enum = enum          # enum class or None
        self.sub = sub            # compiled nested layout or None


def _compile(layout) -> tuple[_Field, ...]:
    fields = []
    for name, field in layout:
        shape = field.shape
        if isinstance(shape, data.Layout):
            fields.append(_Field(name, field.offset, field.width, sub=_compiled(shape)))
        elif isinstance(shape, am_enum.EnumType):
            fields.append(_Field(name, field.offset, field.width, enum=shape))
        else:
            fields.append(_Field(name, field.offset, field.width,
                                 signed=Shape.cast(shape).signed))
    return tuple(fields)


@lru_cache(maxsize=None)
def _compiled_cached(layout):
    return _compile(layout)


def _compiled(layout):
    # Layouts are hashable by value (StructLayout compares its fields), so equal layouts built
    # twice (request_layout(8) in two places) share one compiled form.
    try:
        return _compiled_cached(layout)
    except TypeError:             # an unhashable layout: compile every time
        return _compile(layout)


def layout_width(layout) -> int:
    """Width in bits of the flattened vector of `layout`."""
    return Shape.cast(layout).width


def field_names(layout) -> list[str]:
    """Top-level field names of `layout`, in declaration order."""
    return [f.name for f in _compiled(layout)]


def _pack(compiled, values: Mapping, path: str) -> int:
    known = {f.name for f in compiled}
    unknown = set(values) - known
    if unknown:
        raise KeyError(f"{path or 'layout'} has no field(s) {sorted(unknown)}; "
                       f"fields are {[f.name for f in compiled]}")
    word = 0
    for f in compiled:
        if f.name not in values:
            continue
        value = values[f.name]
        where = f"{path}.{f.name}" if path else f.name
        if f.sub is not None:
            if isinstance(value, Mapping):
                value = _pack(f.sub, value, where)
            value = int(value)
        elif f.enum is not None and isinstance(value, f.enum):
            value = value.value
        else:
            value = int(value)
        if f.signed and value < 0:
            if value < -(1 << (f.width - 1)):
                raise ValueError(f"{where}={value} does not fit in signed({f.width})")
            value &= f.mask
        if not 0 <= value <= f.mask:
            raise ValueError(f"{where}={value:#x} does not fit in {f.width} bits")
        word |= value << f.offset
    return word


def pack(layout, _values: Mapping | None = None, /, **fields) -> int:
    """The integer value of the flattened `layout` with the given fields (others 0).

    Fields come as keyword arguments and/or a mapping; a nested layout's field takes a mapping
    (or an already packed int); enum fields take members or ints.
    """
    values = dict(_values or {})
    values.update(fields)
    return _pack(_compiled(layout), values, "")


def _unpack(compiled, word: int) -> dict:
    out = {}
    for f in compiled:
        v = (word >> f.offset) & f.mask
        if f.sub is not None:
            out[f.name] = _unpack(f.sub, v)
        elif f.enum is not None:
            try:
                out[f.name] = f.enum(v)
            except ValueError:
                out[f.name] = v
        elif f.signed and v >> (f.width - 1):
            out[f.name] = v - (1 << f.width)
        else:
            out[f.name] = v
    return out


def unpack(layout, word: int) -> dict:
    """The fields of `layout` in the integer `word` (a nested dict for nested layouts)."""
    return _unpack(_compiled(layout), int(word))
