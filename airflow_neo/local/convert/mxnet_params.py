"""MXNet's ``.params`` file (an NDArray list file), read and written with numpy alone.

The layout, as MXNet 1.x writes it (``src/ndarray/ndarray.cc`` ``NDArray::Save``, the list form
``NDArray::Save(stream, data, names)``; dmlc streams, little-endian):

- ``uint64`` magic ``0x112``, ``uint64`` reserved (0);
- ``uint64`` count, then that many NDArrays, each:

  - V2 (``uint32`` magic ``0xF993FAC9``, what MXNet >= 1.0 writes): ``int32`` storage type
    (0 dense; 1 row-sparse and 2 CSR are refused here), shape, and unless the shape is empty:
    context (``int32`` dev_type, ``int32`` dev_id), ``int32`` type flag, the raw data;
  - V1 (``0xF993FAC8``): as V2 without the storage type;
  - legacy (the first ``uint32`` is the ndim): ``ndim`` ``uint32`` dims, then context, type flag
    and data as above;
  - V3 (``0xF993FACA``, numpy-shape semantics, MXNet 2) is refused: its shapes differ in meaning;

  a shape (V1/V2) is ``int32`` ndim then ``ndim`` ``int64`` dims;
- ``uint64`` count of names (0 or the number of arrays), then each as ``uint64`` length + UTF-8
  bytes: ``arg:NAME`` for arguments, ``aux:NAME`` for auxiliary states (BatchNorm's running
  statistics); Gluon's ``save_parameters`` writes bare names.

Invariants: :func:`read_params` never executes anything from the file, rejects truncated or
over-long data with :class:`ParamsFormatError` saying what and where, and returns arrays that own
their memory; :func:`write_params` writes what :func:`read_params` (and MXNet's ``nd.load``) reads.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

__all__ = ["LIST_MAGIC", "ParamsFormatError", "read_params", "split_params", "write_params"]

LIST_MAGIC = 0x112
V1_MAGIC = 0xF993FAC8
V2_MAGIC = 0xF993FAC9
V3_MAGIC = 0xF993FACA
#: MXNet's type flags (mshadow) -> numpy dtypes
DTYPES = {0: np.float32, 1: np.float64, 2: np.float16, 3: np.uint8, 4: np.int32, 5: np.int8, 6: np.int64,
          7: np.bool_}
FLAGS = {np.dtype(dtype): flag for flag, dtype in DTYPES.items()}
#: sanity limits: an ndim or a count beyond these is a corrupt file, not a model
MAX_NDIM = 32
STORAGE_NAMES = {1: "row_sparse", 2: "csr"}


class ParamsFormatError(ValueError):
    """The bytes are not an MXNet NDArray list file (or use a form this reader refuses)."""


class _Reader:
    def __init__(self, data: bytes):
        self.data = memoryview(data)
        self.pos = 0

    def take(self, size: int, what: str) -> memoryview:
        if size < 0 or self.pos + size > len(self.data):
            raise ParamsFormatError(f"truncated at byte {self.pos}: {what} needs {size} bytes, "
                                    f"{len(self.data) - self.pos} left")
        chunk = self.data[self.pos:self.pos + size]
        self.pos += size
        return chunk

    def unpack(self, fmt: str, what: str):
        values = struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))
        return values[0] if len(values) == 1 else values


def read_params(path: str | Path) -> tuple[list[str], list[np.ndarray]]:
    """``(names, arrays)`` of an NDArray list file (names empty when the file has none)."""
    reader = _Reader(Path(path).read_bytes())
    magic, _reserved = reader.unpack("QQ", "the header")
    if magic != LIST_MAGIC:
        raise ParamsFormatError(f"the header is 0x{magic:x}, not the NDArray list magic 0x{LIST_MAGIC:x}")
    count = reader.unpack("Q", "the array count")
    _check_count(reader, count, "arrays")
    arrays = [_read_array(reader, index) for index in range(count)]
    names_count = reader.unpack("Q", "the name count")
    if names_count not in (0, count):
        raise ParamsFormatError(f"{names_count} names for {count} arrays")
    names = [bytes(reader.take(reader.unpack("Q", "a name's length"), "a name")).decode("utf-8", "replace")
             for _ in range(names_count)]
    return names, arrays


def _check_count(reader: _Reader, count: int, what: str) -> None:
    if count > len(reader.data):
        raise ParamsFormatError(f"the file claims {count} {what} in {len(reader.data)} bytes")


def _read_array(reader: _Reader, index: int) -> np.ndarray:
    where = f"array {index}"
    magic = reader.unpack("I", f"{where}'s magic")
    if magic == V3_MAGIC:
        raise ParamsFormatError(f"{where} is saved with numpy-shape semantics (MXNet 2, magic 0x{magic:x}); "
                                "save it with MXNet 1.x (mx.nd.save / HybridBlock.export)")
    if magic == V2_MAGIC:
        stype = reader.unpack("i", f"{where}'s storage type")
        if stype != 0:
            raise ParamsFormatError(f"{where} has {STORAGE_NAMES.get(stype, stype)} storage; only dense arrays "
                                    "are read (convert with .tostype('default') before saving)")
    if magic in (V1_MAGIC, V2_MAGIC):
        ndim = reader.unpack("i", f"{where}'s ndim")
        _check_ndim(ndim, where)
        shape = reader.unpack(f"{ndim}q", f"{where}'s shape") if ndim else ()
    else:  # legacy: the magic is the ndim, dims are uint32
        _check_ndim(magic, where)
        shape = reader.unpack(f"{magic}I", f"{where}'s shape") if magic else ()
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if not shape:
        return np.zeros((0,), np.float32)  # MXNet's "none" array: nothing follows
    if any(dim < 0 for dim in shape):
        raise ParamsFormatError(f"{where} has the shape {shape}, with an unknown dimension")
    _dev_type, _dev_id, flag = reader.unpack("iii", f"{where}'s context and type")
    if flag not in DTYPES:
        raise ParamsFormatError(f"{where} has the type flag {flag}; known: {sorted(DTYPES)}")
    dtype = np.dtype(DTYPES[flag])
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    return np.frombuffer(reader.take(size, f"{where}'s data"), dtype=dtype.newbyteorder("<")).reshape(shape).copy()


def _check_ndim(ndim: int, where: str) -> None:
    if not 0 <= ndim <= MAX_NDIM:
        raise ParamsFormatError(f"{where} has ndim {ndim} (allowed: 0 to {MAX_NDIM}); "
                                "not an NDArray (a corrupt file?)")


def split_params(names: list[str], arrays: list[np.ndarray]) -> tuple[dict, dict]:
    """``(args, auxs)`` by name, the ``arg:``/``aux:`` prefixes removed (bare names count as args)."""
    args: dict[str, np.ndarray] = {}
    auxs: dict[str, np.ndarray] = {}
    for name, array in zip(names, arrays):
        kind, sep, rest = name.partition(":")
        if sep and kind == "aux":
            auxs[rest] = array
        else:
            args[rest if sep and kind == "arg" else name] = array
    return args, auxs


def write_params(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``{"arg:NAME" or "aux:NAME": array}`` as MXNet 1.x does (V2, dense, cpu(0))."""
    chunks = [struct.pack("<QQQ", LIST_MAGIC, 0, len(arrays))]
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        if array.ndim == 0:
            raise ValueError(f"{name}: MXNet 1.x arrays have at least one dimension (reshape to (1,))")
        if array.dtype not in FLAGS:
            raise ValueError(f"{name}: dtype {array.dtype} has no MXNet type flag; allowed: "
                             f"{sorted(str(np.dtype(d)) for d in DTYPES.values())}")
        chunks.append(struct.pack(f"<Iii{array.ndim}q", V2_MAGIC, 0, array.ndim, *array.shape))
        chunks.append(struct.pack("<iii", 1, 0, FLAGS[array.dtype]))
        chunks.append(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
    chunks.append(struct.pack("<Q", len(arrays)))
    for name in arrays:
        encoded = name.encode("utf-8")
        chunks.append(struct.pack("<Q", len(encoded)) + encoded)
    path = Path(path)
    path.write_bytes(b"".join(chunks))
    return path
