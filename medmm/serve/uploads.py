"""Upload requests: their limits, and the multipart body read while it streams (every file name replaced by a random
one, the parts counted and checked with python-multipart, the parser gradio itself uses)."""

from __future__ import annotations

import re
import secrets

MAX_UPLOAD_FILES = 8                    # = medmm.pipeline.MAX_SCANS: more files are refused by the pipeline anyway
MAX_UPLOAD_BYTES = 120 * 1024 * 1024    # one upload request, all files together


class TooLarge(Exception):
    def __init__(self, message: str, status: int = 413) -> None:
        super().__init__(message)
        self.message, self.status = message, status


class MalformedUpload(Exception):
    """An upload that gradio's own multipart parser would read differently from what the limits checked."""


class PartChecker:
    """Reads the (renamed) upload body with python-multipart, the parser gradio itself uses, while it streams:
    more than ``max_files`` parts -> :class:`TooLarge`; a part whose Content-Disposition, as that parser reads it,
    still carries a file name other than ``upload-<hex>`` -> :class:`MalformedUpload` (so no header spelling the
    renamer did not recognise can bring a client's file name through)."""

    def __init__(self, boundary: bytes, max_files: int) -> None:
        from python_multipart.multipart import MultipartParser

        self.max_files, self.parts = max_files, 0
        self.field, self.value = b"", b""
        self.parser = MultipartParser(boundary, callbacks={
            "on_part_begin": self._part_begin, "on_header_field": self._field, "on_header_value": self._value,
            "on_header_end": self._header_end})

    def write(self, data: bytes) -> None:
        if data:
            self.parser.write(data)

    def _part_begin(self) -> None:
        self.parts += 1
        if self.parts > self.max_files:
            raise TooLarge(f"At most {self.max_files} files per upload.")

    def _field(self, data: bytes, start: int, end: int) -> None:
        self.field += data[start:end]

    def _value(self, data: bytes, start: int, end: int) -> None:
        self.value += data[start:end]

    def _header_end(self) -> None:
        from python_multipart.multipart import parse_options_header

        field, value, self.field, self.value = self.field, self.value, b"", b""
        if field.strip().lower() == b"content-disposition":
            name = parse_options_header(value)[1].get(b"filename")
            if name is not None and not re.fullmatch(rb"upload-[0-9a-f]{16}(\.[a-z0-9]{1,5})?", name):
                raise MalformedUpload("a file name was not replaced")


class UploadRenamer:
    """Rewrites the ``Content-Disposition`` header of every multipart part that names a file to
    ``form-data; name="<field>"; filename="upload-<random hex>.<ext>"`` while the body streams (the extension is
    kept when it is a short alphanumeric one; the loaders sniff content anyway). The header is read with
    python-multipart's ``parse_options_header`` (what gradio's parser uses), so any spelling it accepts
    (``FILENAME=``, ``filename = "x"``, ``filename*=``) is replaced; :class:`PartChecker` refuses what is left.

    Only part headers are touched - the text right after a boundary delimiter, which by the multipart rules
    cannot occur inside a file's bytes - so file contents pass through unchanged. A header block cut by a chunk
    edge is held back (at most ``HOLD`` bytes) until the next chunk completes it.
    """

    HOLD = 16 * 1024   # longer than any part header block a browser or gradio_client sends

    def __init__(self, delimiter: bytes) -> None:
        # a part's header block: the header lines between its delimiter and the first empty line
        self.block = re.compile(re.escape(delimiter) + rb"[ \t]*\r\n((?:[^\r\n]+\r\n)+)\r\n")
        self.delimiter, self.carry = delimiter, b""

    def feed(self, body: bytes, final: bool) -> bytes:
        buf, self.carry = self.carry + body, b""
        cut = len(buf)
        if not final:
            cut = max(0, len(buf) - self.HOLD)
            last = buf.rfind(self.delimiter, 0, cut + len(self.delimiter))  # a delimiter ending after the cut too
            if last != -1 and last + self.HOLD > cut:
                cut = last                                                 # its header block may not be complete
            buf, self.carry = buf[:cut], buf[cut:]
        return self.block.sub(self._rename_block, buf)

    @staticmethod
    def _rename_block(m: re.Match) -> bytes:
        """The part's Content-Disposition line, when it names a file, becomes one with a random name."""
        from python_multipart.multipart import parse_options_header

        lines = m.group(1).split(b"\r\n")[:-1]
        out = []
        for line in lines:
            name, sep, value = line.partition(b":")
            if sep and name.strip().lower() == b"content-disposition" and b"filename" in value.lower():
                _, options = parse_options_header(value.strip())
                star = re.search(rb"filename\*\s*=\s*([^;]*)", value, re.IGNORECASE)
                given = options.get(b"filename") or (star.group(1).strip().strip(b'"').rsplit(b"'", 1)[-1]
                                                     if star else b"")
                ext = re.search(rb"\.([A-Za-z0-9]{1,5})$", given or b"")
                new = b"upload-" + secrets.token_hex(8).encode() + (b"." + ext.group(1).lower() if ext else b"")
                field = options.get(b"name", b"files").replace(b'"', b"").replace(b"\\", b"")
                line = b'Content-Disposition: form-data; name="' + field + b'"; filename="' + new + b'"'
                if star:                                           # both forms carry the same new name
                    line += b"; filename*=UTF-8''" + new
            out.append(line)
        body = b"\r\n".join(out) + b"\r\n"
        return m.group(0)[: m.start(1) - m.start(0)] + body + m.group(0)[m.end(1) - m.start(0):]
