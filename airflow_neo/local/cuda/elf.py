"""Just enough of ELF64 (little-endian) to read a symbol's bytes out of a shared library built for
any CPU (the artifact's ``model.so``, x86-64 or aarch64, never loaded) and to read a cubin's
architecture and kernels.

Cubin architecture: NVIDIA's ELF ABI version 7 (OS/ABI byte 0x33, CUDA 12's NVRTC) keeps the SM
number in the low byte of ``e_flags`` (0x35 = sm_53); ABI version 8 (OS/ABI 0x41, CUDA 12.8+ for
the newest GPUs, every CUDA 13 cubin) keeps it in the second byte (0x4b = sm_75).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["EM_CUDA", "ElfError", "ElfFile", "cubin_arch"]

EM_CUDA = 190
_SHT_SYMTAB, _SHT_DYNSYM = 2, 11
_STT_FUNC = 2


class ElfError(ValueError):
    """Not an ELF64 little-endian file, or a structure that does not add up."""


@dataclass(frozen=True)
class _Section:
    name_offset: int
    kind: int
    address: int
    offset: int
    size: int
    link: int
    entry_size: int


@dataclass(frozen=True)
class Symbol:
    name: str
    value: int
    size: int
    kind: int  #: STT_* (2: function)
    section: int


class ElfFile:
    def __init__(self, data: bytes):
        if data[:4] != b"\x7fELF" or len(data) < 64:
            raise ElfError("not an ELF file")
        if data[4] != 2 or data[5] != 1:
            raise ElfError("only 64-bit little-endian ELF files are read")
        self.data = data
        self.machine, = struct.unpack_from("<H", data, 18)
        self.flags, = struct.unpack_from("<I", data, 48)
        self.os_abi, self.abi_version = data[7], data[8]
        shoff, = struct.unpack_from("<Q", data, 40)
        entsize, count, names_index = struct.unpack_from("<HHH", data, 58)
        if shoff + count * entsize > len(data):
            raise ElfError("section headers run past the end of the file")
        self.sections = [self._section(shoff + index * entsize) for index in range(count)]
        self._names = self.sections[names_index] if names_index < count else None

    def _section(self, at: int) -> _Section:
        name, kind, _flags, address, offset, size, link, _info, _align, entry_size = struct.unpack_from(
            "<IIQQQQIIQQ", self.data, at)
        return _Section(name, kind, address, offset, size, link, entry_size)

    def _string(self, table: _Section, offset: int) -> str:
        start = table.offset + offset
        end = self.data.index(b"\x00", start)
        return self.data[start:end].decode("utf-8", errors="replace")

    def section_name(self, section: _Section) -> str:
        return self._string(self._names, section.name_offset) if self._names else ""

    def symbols(self) -> list[Symbol]:
        found = []
        for section in self.sections:
            if section.kind not in (_SHT_SYMTAB, _SHT_DYNSYM) or not section.entry_size:
                continue
            strings = self.sections[section.link]
            for at in range(section.offset, section.offset + section.size, section.entry_size):
                name, info, _other, index, value, size = struct.unpack_from("<IBBHQQ", self.data, at)
                found.append(Symbol(self._string(strings, name), value, size, info & 0xF, index))
        return found

    def symbol_bytes(self, name: str) -> bytes:
        """The bytes a defined data symbol covers (read through the section holding its address)."""
        for symbol in self.symbols():
            if symbol.name != name or not symbol.section or symbol.section >= len(self.sections):
                continue
            section = self.sections[symbol.section]
            start = section.offset + (symbol.value - section.address)
            if symbol.size and section.address <= symbol.value and start + symbol.size <= len(self.data):
                return self.data[start:start + symbol.size]
        raise ElfError(f"no defined symbol {name!r}")

    def functions(self) -> list[str]:
        return sorted({symbol.name for symbol in self.symbols() if symbol.kind == _STT_FUNC and symbol.name})


def cubin_arch(cubin: ElfFile) -> str:
    """``sm_XX`` of a cubin; ElfError when it is not one."""
    if cubin.machine != EM_CUDA:
        raise ElfError(f"ELF machine {cubin.machine} is not CUDA ({EM_CUDA})")
    number = (cubin.flags >> 8) & 0xFF if cubin.abi_version >= 8 else cubin.flags & 0xFF
    return f"sm_{number}"
