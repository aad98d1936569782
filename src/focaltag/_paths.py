"""File names in text outputs: one lossless escaping for any name the OS holds, and its reader.

A Linux file name is bytes; Python holds it as ``str`` with each byte that is not valid UTF-8 as a lone surrogate
``\\udcXX`` (``os.fsdecode``, the ``surrogateescape`` handler). Every path focaltag writes is written so that
reading it back gives that same ``str`` (and so the same bytes) again:

* **JSON** (``tag -o tags.jsonl``, ``--format json``, ``failures``): the string as JSON holds it; a line holding a
  name that is not valid UTF-8 is written with ASCII escapes, so that byte appears as ``"\\udcXX"``, which every
  JSON reader turns back into the same string (:func:`json_line`). ``json.loads`` of the line is the reader.
* **TSV and the table** (``failures.tsv``, ``--format table``, ``--format csv``): :func:`escape_path`, a
  backslash escaping read back by :func:`unescape_path`:

  ===================================================  ===============
  in the name                                          written as
  ===================================================  ===============
  backslash                                            ``\\\\``
  tab, newline, carriage return                        ``\\t`` ``\\n`` ``\\r``
  a byte that is not UTF-8, other control characters   ``\\xHH`` (the byte)
  U+0085, U+2028, U+2029 (lines breaks to some readers)  ``\\uHHHH``
  anything else                                        itself (UTF-8)
  ===================================================  ===============

  A name with none of these (nearly all) is written as it is.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

__all__ = ["escape_path", "unescape_path", "json_line"]

_SHORT = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_UNSHORT = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}
_SEPARATORS = {"\x85", "\u2028", "\u2029"}
_NEEDS = re.compile("[\\\\\x00-\x1f\x7f\x85\u2028\u2029\udc80-\udcff]")
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|[\\tnr])")


def _escape_char(match: re.Match[str]) -> str:
    ch = match.group(0)
    if ch in _SHORT:
        return _SHORT[ch]
    if ch in _SEPARATORS:
        return f"\\u{ord(ch):04x}"
    code = ord(ch)
    return f"\\x{code - 0xDC00 if code >= 0xDC80 else code:02x}"


def escape_path(path: str | os.PathLike[str]) -> str:
    """``path`` as one line of printable text without tabs, read back exactly by :func:`unescape_path`."""
    text = os.fspath(path)
    return _NEEDS.sub(_escape_char, text) if _NEEDS.search(text) else text


def unescape_path(text: str) -> str:
    """The path :func:`escape_path` wrote (with ``\\udcXX`` for bytes that are not UTF-8, as ``os.fsdecode``)."""
    if "\\" not in text:
        return text
    out = bytearray()
    pos = 0
    for match in _ESCAPE.finditer(text):
        out += text[pos:match.start()].encode("utf-8", "surrogateescape")
        code = match.group(1)
        if code[0] == "x":
            out.append(int(code[1:], 16))
        elif code[0] == "u":
            out += chr(int(code[1:], 16)).encode("utf-8")
        else:
            out += _UNSHORT[code].encode("utf-8")
        pos = match.end()
    out += text[pos:].encode("utf-8", "surrogateescape")
    return bytes(out).decode("utf-8", "surrogateescape")


def json_line(obj: Any) -> str:
    """One JSON text, UTF-8 where it can be; ASCII escapes (``\\udcXX``) when a string is not valid UTF-8."""
    line = json.dumps(obj, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(obj)
    return line
