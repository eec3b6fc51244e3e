"""TVM's packed-imports blob (the ``__tvm_ffi__library_bin`` symbol of an exported library) and the
CUDA device module inside it, read and rewritten byte for byte.

Why: TVM 0.27's PyPI wheel is built without CUDA, so its codegen stores the kernels as CUDA C++
source (format ``cuda``) and leaves the compile to whoever loads the library. The local backend
compiles them ahead of time with NVRTC instead, so this module swaps the source for a cubin
(format ``cubin``) before the blob is linked into ``model.so``. On a CUDA-enabled TVM runtime the
module then loads without NVRTC on the device.

Layout (little-endian, as TVM's ``support::BytesOutStream`` writes it)::

    blob    = u64 size, u64[] import_tree_row_ptr, u64[] import_tree_child_indices,
              then per module: str key, and unless key == "_lib": bytes payload
    cuda    = str fmt, map<str, FunctionInfo> fmap, bytes code
    FunctionInfo = str name, DLDataType[] arg_types, str[] launch_param_tags, i32[] arg_extra_tags
    str/bytes = u64 length + bytes;  T[] = u64 count + items

Invariant: :func:`ImportBlob.from_bytes` then :meth:`ImportBlob.to_bytes` gives back the same
bytes; anything that does not parse raises :class:`BlobFormatError` (never a silent guess).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

__all__ = ["BlobFormatError", "CudaModule", "ImportBlob", "PackedModule"]


class BlobFormatError(ValueError):
    """The bytes are not the layout this module knows."""


class _Reader:
    def __init__(self, data: bytes, offset: int = 0):
        self.data, self.offset = data, offset

    def u64(self) -> int:
        if self.offset + 8 > len(self.data):
            raise BlobFormatError(f"truncated at byte {self.offset}")
        (value,) = struct.unpack_from("<Q", self.data, self.offset)
        self.offset += 8
        return value

    def raw(self, size: int) -> bytes:
        if size < 0 or self.offset + size > len(self.data):
            raise BlobFormatError(f"a {size}-byte field at byte {self.offset} runs past the end ({len(self.data)})")
        chunk = self.data[self.offset:self.offset + size]
        self.offset += size
        return chunk

    def bytes_(self) -> bytes:
        return self.raw(self.u64())

    def text(self) -> str:
        return self.bytes_().decode("utf-8")

    def u64_list(self) -> list[int]:
        count = self.u64()
        if count > len(self.data):
            raise BlobFormatError(f"a list of {count} items at byte {self.offset - 8} cannot fit")
        return [self.u64() for _ in range(count)]

    def at_end(self) -> bool:
        return self.offset == len(self.data)


def _u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def _bytes(value: bytes) -> bytes:
    return _u64(len(value)) + value


@dataclass
class PackedModule:
    """One module of the import tree: its type key and serialized payload (None for ``_lib``, the
    host library itself)."""

    key: str
    payload: bytes | None


@dataclass
class ImportBlob:
    row_ptr: list[int]
    child_indices: list[int]
    modules: list[PackedModule] = field(default_factory=list)

    @classmethod
    def from_bytes(cls, data: bytes) -> "ImportBlob":
        reader = _Reader(data)
        size = reader.u64()
        if size != len(data) - 8:
            raise BlobFormatError(f"the blob says it holds {size} bytes; {len(data) - 8} follow")
        blob = cls(reader.u64_list(), reader.u64_list())
        while not reader.at_end():
            key = reader.text()
            blob.modules.append(PackedModule(key, None if key == "_lib" else reader.bytes_()))
        if len(blob.row_ptr) != len(blob.modules) + 1:
            raise BlobFormatError(f"{len(blob.modules)} modules but an import tree for {len(blob.row_ptr) - 1}")
        return blob

    def to_bytes(self) -> bytes:
        body = _u64(len(self.row_ptr)) + b"".join(_u64(v) for v in self.row_ptr)
        body += _u64(len(self.child_indices)) + b"".join(_u64(v) for v in self.child_indices)
        for module in self.modules:
            body += _bytes(module.key.encode("utf-8"))
            if module.payload is not None:
                body += _bytes(module.payload)
        return _u64(len(body)) + body

    def find(self, key: str) -> list[int]:
        """Indices of the modules of type ``key``."""
        return [index for index, module in enumerate(self.modules) if module.key == key]


@dataclass
class CudaModule:
    """A CUDA device module's payload: format, function table (kept as its raw bytes, plus the
    kernel names read from it) and code (CUDA source, PTX or cubin)."""

    fmt: str
    fmap_raw: bytes
    kernels: list[str]
    code: bytes

    @classmethod
    def from_payload(cls, payload: bytes) -> "CudaModule":
        reader = _Reader(payload)
        fmt = reader.text()
        start = reader.offset
        kernels = _read_fmap(reader)
        fmap_raw = payload[start:reader.offset]
        code = reader.bytes_()
        if not reader.at_end():
            raise BlobFormatError(f"{len(payload) - reader.offset} bytes follow the CUDA module's code")
        return cls(fmt, fmap_raw, kernels, code)

    def to_payload(self) -> bytes:
        return _bytes(self.fmt.encode("utf-8")) + self.fmap_raw + _bytes(self.code)

    def with_code(self, fmt: str, code: bytes) -> "CudaModule":
        return CudaModule(fmt, self.fmap_raw, list(self.kernels), code)


def _read_fmap(reader: _Reader) -> list[str]:
    names = []
    for _ in range(reader.u64()):
        key = reader.text()
        name = reader.text()
        if name != key:
            raise BlobFormatError(f"function table entry {key!r} names {name!r}")
        reader.raw(4 * reader.u64())  # arg_types: DLDataType (u8 code, u8 bits, u16 lanes)
        for _ in range(reader.u64()):  # launch_param_tags
            reader.text()
        reader.raw(4 * reader.u64())  # arg_extra_tags (int32 enum)
        names.append(key)
    return names
