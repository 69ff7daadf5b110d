"""Read a PyTorch state dict (.pth) into numpy arrays without importing torch.

The default backbone's weights ship as a torch checkpoint, but torch is a multi-gigabyte
dependency we only allow in tests.  A state dict is just pickles plus raw storage bytes, so a
restricted unpickler and numpy are enough.  Two layouts exist:

* legacy (torch < 1.6): successive pickles — magic number, protocol version, system info, the
  state dict (tensors refer to storages through persistent ids), the list of storage keys — then
  each storage's bytes, each preceded by its int64 element count;
* zip (torch >= 1.6): `<archive>/data.pkl` plus one `<archive>/data/<key>` file per storage.

The file is untrusted input: `find_class` admits only the handful of names a state dict needs,
so unpickling can never import or call anything else.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import os
import pickle
import struct
import zipfile
from typing import Any, BinaryIO

import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# Storage class name -> numpy dtype of its elements, little-endian.  bfloat16 has no numpy dtype:
# it is read as its raw 16 bits and widened to float32 exactly (see `_decode`).
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype("<f8"), "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"), "BFloat16Storage": np.dtype("<u2"),
    "LongStorage": np.dtype("<i8"), "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"), "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"), "BoolStorage": np.dtype("?"),
}


@dataclasses.dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return _STORAGE_DTYPES[self.name]


@dataclasses.dataclass
class _Storage:
    """A flat storage whose bytes may only arrive after the pickle (legacy layout)."""

    storage_type: _StorageType
    numel: int
    data: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class _PendingTensor:
    """What `_rebuild_tensor_v2` stands for until the storages have been read."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    view_offset: int = 0  # legacy storage views: where the view starts in its root storage


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None) -> _PendingTensor:
    view_offset = 0
    if isinstance(storage, tuple):  # (root storage, view offset) from a legacy storage view
        storage, view_offset = storage
    if not isinstance(storage, _Storage):
        raise ValueError("The checkpoint has a tensor that does not refer to a storage.")
    return _PendingTensor(storage, int(storage_offset), tuple(int(s) for s in size),
                          tuple(int(s) for s in stride), view_offset)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None) -> _PendingTensor:
    return data  # an nn.Parameter in a state dict is just its tensor for us


_ALLOWED_CLASSES = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles a state dict, admitting only tensors, storages and ordered dicts."""

    def __init__(self, file: BinaryIO, storages: dict[str, _Storage], read_storage=None):
        super().__init__(file, encoding="utf-8")
        self._storages = storages
        self._read_storage = read_storage  # zip layout: key, storage -> array; legacy: None

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) in _ALLOWED_CLASSES:
            return _ALLOWED_CLASSES[(module, name)]
        raise ValueError(f"The checkpoint refers to {module}.{name}, which a plain state dict "
                         f"never needs, so it was not loaded.")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and pid and pid[0] in ("storage", b"storage")):
            raise ValueError(f"The checkpoint has an unknown persistent id {pid!r:.80}.")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise ValueError("The checkpoint has a storage of an unknown type.")
        key = key.decode() if isinstance(key, bytes) else str(key)
        storage = self._storages.get(key)
        if storage is None:
            storage = self._storages[key] = _Storage(storage_type, int(numel))
            if self._read_storage is not None:
                storage.data = self._read_storage(key, storage)
        view = pid[5] if len(pid) > 5 else None
        if view is not None:  # legacy view: (view key, offset, size) into the root storage
            return storage, int(view[1])
        return storage


def _decode(raw: bytes, storage: _Storage, little_endian: bool) -> np.ndarray:
    dtype = storage.storage_type.dtype
    if len(raw) != storage.numel * dtype.itemsize:
        raise ValueError("The checkpoint is truncated: a storage has fewer bytes than it declares.")
    array = np.frombuffer(raw, dtype=dtype if little_endian else dtype.newbyteorder(">"))
    if storage.storage_type.name == "BFloat16Storage":
        return (array.astype("<u4") << 16).view("<f4")
    return array.astype(array.dtype.newbyteorder("="), copy=False)


def _materialise(tensor: _PendingTensor) -> np.ndarray:
    """Lay a tensor's size and stride over its storage, refusing any view that reads outside."""
    flat = tensor.storage.data
    start = tensor.view_offset + tensor.offset
    if len(tensor.size) != len(tensor.stride) or min(tensor.size + tensor.stride + (start,),
                                                      default=0) < 0:
        raise ValueError("The checkpoint has a tensor with an invalid shape or stride.")
    if 0 in tensor.size:
        return np.empty(tensor.size, dtype=flat.dtype)
    last = start + sum((n - 1) * s for n, s in zip(tensor.size, tensor.stride))
    if last >= flat.size:
        raise ValueError("The checkpoint has a tensor that reaches past the end of its storage.")
    strides = tuple(s * flat.itemsize for s in tensor.stride)
    view = np.lib.stride_tricks.as_strided(flat[start:], shape=tensor.size, strides=strides,
                                           writeable=False)
    return np.array(view, copy=True)


def _to_state_dict(result: Any) -> dict[str, np.ndarray]:
    if not isinstance(result, dict):
        raise ValueError("The checkpoint does not hold a state dict (a mapping of tensors).")
    state_dict = {}
    for key, value in result.items():
        if not isinstance(value, _PendingTensor):
            raise ValueError(f"The checkpoint entry {key!r} is not a tensor.")
        state_dict[str(key)] = _materialise(value)
    return state_dict


def _read_legacy(f: BinaryIO, file_size: int) -> dict[str, np.ndarray]:
    try:  # every pickle in the file goes through the restricted unpickler, this one included
        magic = _StateDictUnpickler(f, {}).load()
    except Exception:  # arbitrary bytes fail in arbitrary ways; all mean "not a checkpoint"
        magic = None
    if magic != LEGACY_MAGIC_NUMBER:
        raise ValueError("The file is not a PyTorch checkpoint (no legacy magic number, not zip).")
    if _StateDictUnpickler(f, {}).load() != LEGACY_PROTOCOL_VERSION:
        raise ValueError("The PyTorch checkpoint uses an unknown legacy protocol version.")
    sys_info = _StateDictUnpickler(f, {}).load()
    little_endian = bool(sys_info.get("little_endian", True)) if isinstance(
        sys_info, dict) else True
    storages: dict[str, _Storage] = {}
    result = _StateDictUnpickler(f, storages).load()
    for key in _StateDictUnpickler(f, {}).load():
        storage = storages.get(str(key))
        if storage is None:
            raise ValueError("The PyTorch checkpoint lists a storage that no tensor uses.")
        (numel,) = struct.unpack("<q" if little_endian else ">q", f.read(8))
        nbytes = numel * storage.storage_type.dtype.itemsize
        if numel != storage.numel or nbytes > file_size - f.tell():
            raise ValueError("The PyTorch checkpoint is truncated or its storage sizes disagree.")
        storage.data = _decode(f.read(nbytes), storage, little_endian)
    return _to_state_dict(result)


def _read_zip(archive: zipfile.ZipFile) -> dict[str, np.ndarray]:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise ValueError("The zip file is not a PyTorch checkpoint (no <name>/data.pkl inside).")
    prefix = pickles[0][: -len("data.pkl")]
    names = set(archive.namelist())
    little_endian = True
    if prefix + "byteorder" in names:
        little_endian = archive.read(prefix + "byteorder").strip() != b"big"

    def read_storage(key: str, storage: _Storage) -> np.ndarray:
        name = f"{prefix}data/{key}"
        if name not in names:
            raise ValueError(f"The PyTorch checkpoint lacks the storage {key!r}.")
        return _decode(archive.read(name), storage, little_endian)

    with archive.open(pickles[0]) as f:
        result = _StateDictUnpickler(io.BytesIO(f.read()), {}, read_storage).load()
    return _to_state_dict(result)


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """Read a torch-saved state dict (legacy or zip layout) as name -> numpy array, in file order.

    Raises ValueError with a plain sentence when the file is not such a checkpoint.
    """
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(0)
        try:
            if head == b"PK\x03\x04":
                with zipfile.ZipFile(f) as archive:
                    return _read_zip(archive)
            return _read_legacy(f, os.fstat(f.fileno()).st_size)
        except (pickle.UnpicklingError, EOFError, struct.error, zipfile.BadZipFile,
                KeyError, TypeError, AttributeError, IndexError) as e:
            raise ValueError(f"{path} is not a readable PyTorch state dict ({e}).") from e
