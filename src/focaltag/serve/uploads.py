"""Multipart uploads streamed straight into a private folder, with the size limit checked while they arrive.

The body is never held in memory and never spooled to a shared temporary file: each ``file`` part is written
to ``<private folder>/<n><ext>`` as it streams in, and the request is cut off with :class:`UploadTooLarge` as
soon as it passes the limit (or at once when its Content-Length says it will). Form fields are small strings.

File names are kept as the client sent them: raw UTF-8 (what browsers send, RFC 7578), or RFC 5987
``filename*=UTF-8''...`` (which takes precedence, as RFC 6266 says); a name that is not UTF-8 is read as
Latin-1 (one character per byte, nothing lost). Any malformed body (a boundary over 256 characters, a header without a colon, a body cut
off before its closing boundary) is an :class:`UploadError` (HTTP 400), and a body that stalls longer than the
read deadline between two chunks is an :class:`UploadTimeout` (HTTP 408).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast
from urllib.parse import unquote_to_bytes

from focaltag.errors import first_line

__all__ = ["Upload", "UploadedFile", "UploadError", "UploadTooLarge", "UploadTimeout", "receive_upload",
           "display_name", "filename_of"]

FILE_FIELD = "file"
_MAX_FIELD_BYTES = 4096
_MAX_FIELDS = 16
_MAX_HEADER_BYTES = 16384  # one part's headers together
_SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,8}$")
_EXTENDED_FILENAME = re.compile(rb"(?:^|;)\s*filename\*\s*=\s*([^;]*)", re.IGNORECASE)


class UploadError(Exception):
    """The request body is not a usable multipart upload (HTTP 400)."""


class UploadTooLarge(UploadError):
    """The request body is over the server's limit (HTTP 413)."""


class UploadTimeout(UploadError):
    """The client sent nothing for longer than the read deadline, or past the request deadline (HTTP 408)."""


@dataclass(frozen=True)
class UploadedFile:
    """One uploaded file: the client's name (for results, never a server path) and where it was stored."""

    name: str
    path: Path
    size: int


@dataclass
class Upload:
    files: list[UploadedFile] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)


def display_name(raw: str | None, index: int) -> str:
    """The client's file name without folders or control characters (``upload-N`` when there is none)."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()[:255]
    return name or f"upload-{index + 1}"


def _text(raw: bytes) -> str:
    """Header bytes as text: UTF-8 (browsers, RFC 7578), else Latin-1 (HTTP's historic header charset), which
    maps every byte to one character, so nothing is lost."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def filename_of(disposition: bytes) -> str | None:
    """The file name of a part's raw Content-Disposition: ``filename*`` (RFC 5987) first, else ``filename``."""
    from python_multipart.multipart import parse_options_header

    extended = _EXTENDED_FILENAME.search(disposition)
    if extended is not None:
        charset, _, rest = extended.group(1).strip().strip(b'"').partition(b"'")
        _language, _, encoded = rest.partition(b"'")
        raw = unquote_to_bytes(encoded)
        if charset.lower() in (b"iso-8859-1", b"latin-1", b"latin1"):
            return raw.decode("latin-1")
        return _text(raw)
    filename = parse_options_header(disposition)[1].get(b"filename")  # bytes in, the same bytes out
    return None if filename is None else _text(filename)


def _stored_name(name: str, index: int) -> str:
    """A file name inside the private folder: a counter plus the extension, which decoders may look at."""
    suffix = Path(name).suffix
    return f"{index:03d}{suffix.lower() if _SAFE_SUFFIX.match(suffix) else ''}"


class _Receiver:
    """python-multipart callbacks that route ``file`` parts to disk and other fields to short strings."""

    def __init__(self, folder: Path, *, max_files: int) -> None:
        self.folder, self.max_files = folder, max_files
        self.upload = Upload()
        self._headers: dict[str, bytes] = {}
        self._field = self._value = b""
        self._name: str | None = None
        self._file: IO[bytes] | None = None
        self._file_name = ""
        self._file_path: Path | None = None
        self._size = 0
        self._buffer = bytearray()

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._part_begin, "on_header_field": self._header_field,
            "on_header_value": self._header_value, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers, self._field, self._value = {}, b"", b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]
        self._check_header_size()

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]
        self._check_header_size()

    def _check_header_size(self) -> None:
        if len(self._field) + len(self._value) + sum(map(len, self._headers.values())) > _MAX_HEADER_BYTES:
            raise UploadError(f"a part's headers are longer than {_MAX_HEADER_BYTES} bytes")

    def _header_end(self) -> None:
        self._headers[self._field.decode("latin-1").lower()] = self._value
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        disposition = self._headers.get("content-disposition", b"")
        _, options = parse_options_header(disposition)
        name = _text(options.get(b"name", b""))
        self._name, self._buffer = name, bytearray()
        if name == FILE_FIELD:
            index = len(self.upload.files)
            if index >= self.max_files:
                raise UploadError(f"too many files in one request (at most {self.max_files}); send fewer")
            self._file_name = display_name(filename_of(disposition), index)
            self._file_path = self.folder / _stored_name(self._file_name, index)
            self._file = open(self._file_path, "xb")  # noqa: SIM115 - closed in _part_end or close()
            self._size = 0
        elif len(self.upload.fields) >= _MAX_FIELDS:
            raise UploadError(f"too many form fields (at most {_MAX_FIELDS})")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._file is not None:
            self._file.write(data[start:end])
            self._size += end - start
            return
        self._buffer += data[start:end]
        if len(self._buffer) > _MAX_FIELD_BYTES:
            raise UploadError(f"form field {self._name!r} is longer than {_MAX_FIELD_BYTES} bytes")

    def _part_end(self) -> None:
        if self._file is not None and self._file_path is not None:
            self._file.close()
            self._file = None
            self.upload.files.append(UploadedFile(self._file_name, self._file_path, self._size))
        elif self._name:
            self.upload.fields[self._name] = self._buffer.decode("utf-8", "replace").strip()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _boundary(content_type: str) -> bytes:
    from python_multipart.multipart import parse_options_header

    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise UploadError("send the audio as multipart/form-data with one or more 'file' fields")
    return boundary


async def receive_upload(stream: AsyncIterator[bytes], content_type: str, folder: Path, *,
                         max_bytes: int, content_length: str | None = None, max_files: int = 32,
                         read_timeout: float | None = None, deadline: float | None = None) -> Upload:
    """Parse a multipart body from ``stream`` into ``folder`` (which the caller owns and removes).

    Raises UploadTooLarge as soon as the body passes ``max_bytes``, UploadTimeout when no chunk comes for
    ``read_timeout`` seconds or the loop's clock passes ``deadline``, and UploadError for a malformed body.
    """
    from python_multipart.multipart import MultipartParser, MultipartState

    if content_length is not None and content_length.isdigit() and int(content_length) > max_bytes:
        raise UploadTooLarge(_too_large(max_bytes))
    receiver = _Receiver(folder, max_files=max_files)
    received = 0
    try:
        parser = MultipartParser(_boundary(content_type), cast(Any, receiver.callbacks()))
        async for chunk in _paced(stream, read_timeout, deadline):
            received += len(chunk)
            if received > max_bytes:
                raise UploadTooLarge(_too_large(max_bytes))
            if chunk:
                parser.write(chunk)
        parser.finalize()
        if parser.state != MultipartState.END:
            raise UploadError("the multipart body ends before its closing boundary (truncated upload)")
    except UploadError:
        raise
    except (ValueError, KeyError, IndexError, UnicodeError) as err:  # python-multipart's errors are ValueErrors
        raise UploadError(f"malformed multipart body: {first_line(err)}") from None
    finally:
        receiver.close()
    if not receiver.upload.files:
        raise UploadError(f"no audio in the request; send one or more files in the form field '{FILE_FIELD}'")
    return receiver.upload


async def _paced(stream: AsyncIterator[bytes], read_timeout: float | None,
                 deadline: float | None) -> AsyncIterator[bytes]:
    """``stream``'s chunks, each awaited at most ``read_timeout`` s and none past ``deadline`` (loop clock)."""
    loop = asyncio.get_running_loop()
    chunks = stream.__aiter__()
    while True:
        wait = read_timeout
        if deadline is not None:
            left = deadline - loop.time()
            wait = left if wait is None else min(wait, left)
            if wait <= 0:
                raise UploadTimeout("the upload took longer than the server's --request-timeout; send less at once")
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), wait)
        except StopAsyncIteration:
            return
        except TimeoutError:
            if deadline is not None and loop.time() >= deadline:
                raise UploadTimeout("the upload took longer than the server's --request-timeout; send less at "
                                    "once") from None
            raise UploadTimeout(f"the upload stalled: nothing arrived for {read_timeout:g} s (--read-timeout)") \
                from None
        yield chunk


def _too_large(max_bytes: int) -> str:
    return (f"the upload is over the server's limit of {max_bytes / 2**20:g} MB; send a smaller file or start "
            "the server with a larger --max-upload-mb")
