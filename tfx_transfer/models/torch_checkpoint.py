"""Reads PyTorch checkpoints (state dicts) into numpy arrays without importing torch.

Two on-disk formats exist. The legacy one (torch < 1.6, e.g. torchvision's MobileNetV2 file) is a
sequence of pickles - magic number, protocol version, system info, the state dict whose tensors
point at storages by persistent id, the list of storage keys - followed by each storage's raw
little-endian bytes behind an int64 element count. The zip one (torch >= 1.6) holds `data.pkl` and
one `data/<key>` entry per storage. Only plain tensors and ordered dicts are accepted; any other
class in the pickle is refused, so a hostile file cannot run code.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, dtype):
        self.dtype = np.dtype(dtype).newbyteorder("<")


class _Storage:
    def __init__(self, dtype: np.dtype, numel: int):
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None


class _TensorRef:
    def __init__(self, storage: _Storage, offset: int, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def to_numpy(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise ValueError("Checkpoint is truncated: a tensor's storage has no data.")
        self._check_bounds(len(data))
        itemsize = data.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.size,
            strides=tuple(s * itemsize for s in self.stride),
        )
        return np.array(view, dtype=data.dtype.newbyteorder("="))


    def _check_bounds(self, available: int) -> None:
        """as_strided reads whatever memory the numbers point at: every element must lie in the storage."""
        numbers = (self.offset, *self.size, *self.stride)
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers):
            raise ValueError(f"Checkpoint is corrupt: a tensor has offset {self.offset}, size {self.size}, stride "
                             f"{self.stride}; expected non-negative integers.")
        if 0 in self.size:
            return
        last = self.offset + sum((n - 1) * step for n, step in zip(self.size, self.stride))
        if last >= available:
            raise ValueError(f"Checkpoint is corrupt: a tensor (offset {self.offset}, size {self.size}, stride "
                             f"{self.stride}) reaches element {last}, but its storage holds {available}.")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *unused):
    return _TensorRef(storage, storage_offset, size, stride)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict[str, _Storage]):
        super().__init__(file)
        self._storages = storages

    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(
            f"Refusing to load {module}.{name} from a checkpoint: only tensors and ordered dicts "
            "are read. Save a plain state dict (torch.save(model.state_dict(), path))."
        )

    def persistent_load(self, persistent_id):
        # ('storage', storage_type, key, location, numel[, view_metadata])
        _, storage_type, key, _location, numel = persistent_id[:5]
        if key not in self._storages:
            self._storages[key] = _Storage(storage_type.dtype, int(numel))
        return self._storages[key]


def _load_legacy(file) -> tuple[dict, dict[str, _Storage]]:
    storages: dict[str, _Storage] = {}
    magic = _RestrictedUnpickler(file, storages).load()
    if magic != _LEGACY_MAGIC:
        raise ValueError("Not a PyTorch checkpoint (bad magic number).")
    protocol = _RestrictedUnpickler(file, storages).load()
    if protocol != _LEGACY_PROTOCOL:
        raise ValueError(f"Unsupported legacy PyTorch protocol {protocol}; expected 1001.")
    _RestrictedUnpickler(file, storages).load()  # system info: byte order, type sizes
    state = _RestrictedUnpickler(file, storages).load()
    keys = _RestrictedUnpickler(file, storages).load()
    for key in keys:
        storage = storages[key]
        count = int(np.frombuffer(file.read(8), "<i8")[0])
        if count != storage.numel:
            raise ValueError(f"Checkpoint is corrupt: storage {key} declares {storage.numel} elements but holds {count}.")
        raw = file.read(count * storage.dtype.itemsize)
        if len(raw) != count * storage.dtype.itemsize:
            raise ValueError("Checkpoint is truncated: a storage ends early.")
        storage.data = np.frombuffer(raw, storage.dtype)
    return state, storages


def _load_zip(path: Path) -> tuple[dict, dict[str, _Storage]]:
    storages: dict[str, _Storage] = {}
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickle_name = next(n for n in names if n.endswith("data.pkl"))
        prefix = pickle_name[: -len("data.pkl")]
        state = _RestrictedUnpickler(io.BytesIO(archive.read(pickle_name)), storages).load()
        for key, storage in storages.items():
            raw = archive.read(f"{prefix}data/{key}")
            if len(raw) != storage.numel * storage.dtype.itemsize:
                raise ValueError(f"Checkpoint is corrupt: storage {key} declares {storage.numel} elements "
                                 f"({storage.numel * storage.dtype.itemsize} bytes) but holds {len(raw)} bytes.")
            storage.data = np.frombuffer(raw, storage.dtype)
    return state, storages


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Loads a PyTorch state dict as `{name: numpy array}`, in the file's order.

    Args:
        path: A `.pth`/`.pt` file in the legacy or the zip format.

    Raises:
        ValueError: if the file is not a state dict of plain tensors.

    Example:
        >>> state = load_state_dict("mobilenet_v2-b0353104.pth")  # doctest: +SKIP
        >>> state["features.0.0.weight"].shape  # doctest: +SKIP
        (32, 3, 3, 3)
    """
    path = Path(path)
    if zipfile.is_zipfile(path):
        state, _ = _load_zip(path)
    else:
        with open(path, "rb") as file:
            state, _ = _load_legacy(file)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict.")
    return {name: tensor.to_numpy() for name, tensor in state.items() if isinstance(tensor, _TensorRef)}
