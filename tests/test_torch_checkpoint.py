"""The torch-free checkpoint reader, on files written here in both PyTorch formats."""

from __future__ import annotations

import collections
import io
import pickle
import struct
import sys
import types
import zipfile

import numpy as np
import pytest

from tfx_transfer.models.torch_checkpoint import load_state_dict


@pytest.fixture
def fake_torch(monkeypatch):
    """Just enough of a `torch` module for pickle to write references to torch classes."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    class LongStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while writing")

    for obj, module in ((FloatStorage, "torch"), (LongStorage, "torch"), (_rebuild_tensor_v2, "torch._utils")):
        obj.__module__, obj.__qualname__ = module, obj.__name__
    torch.FloatStorage, torch.LongStorage, torch._utils = FloatStorage, LongStorage, utils
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


class _Storage:
    def __init__(self, key, storage_type, array):
        self.key, self.storage_type, self.array = key, storage_type, array


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self):
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return rebuild, (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict())


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", obj.storage_type, obj.key, "cpu", obj.array.size)
        return None


def _state(torch, bad_view=None):
    weight = np.arange(24, dtype="float32")
    steps = np.array([7], dtype="int64")
    w_storage = _Storage("0", torch.FloatStorage, weight)
    s_storage = _Storage("1", torch.LongStorage, steps)
    state = collections.OrderedDict(
        [
            ("conv.weight", _Tensor(w_storage, 0, (2, 3, 2, 2), (12, 4, 2, 1))),
            ("conv.weight_t", _Tensor(w_storage, 12, (3, 2), (1, 3))),  # a strided view
            ("bn.num_batches_tracked", _Tensor(s_storage, 0, (), ())),
        ]
    )
    if bad_view is not None:  # (offset, size, stride) of a view of the 24-element storage
        state["bad"] = _Tensor(w_storage, *bad_view)
    return state, [w_storage, s_storage]


def _write_legacy(path, torch, bad_view=None, short_storage=False):
    state, storages = _state(torch, bad_view)
    buffer = io.BytesIO()
    for value in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
        pickle.dump(value, buffer, protocol=2)
    _Pickler(buffer, protocol=2).dump(state)
    pickle.dump([s.key for s in storages], buffer, protocol=2)
    for storage in storages:
        array = storage.array[:-1] if short_storage else storage.array
        buffer.write(struct.pack("<q", array.size))
        buffer.write(array.astype(array.dtype.newbyteorder("<")).tobytes())
    path.write_bytes(buffer.getvalue())


def _write_zip(path, torch, bad_view=None, short_storage=False):
    state, storages = _state(torch, bad_view)
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=2).dump(state)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        for storage in storages:
            archive.writestr(f"archive/data/{storage.key}", storage.array[:-1 if short_storage else None].tobytes())


@pytest.mark.parametrize("writer", [_write_legacy, _write_zip])
@pytest.mark.parametrize("bad_view, expected", [
    ((20, (2, 3), (3, 1)), r"reaches element 25, but its storage holds 24"),  # runs past the end
    ((0, (2, 3), (-3, 1)), r"expected non-negative integers"),  # strides backwards, before the start
    ((30, (1,), (1,)), r"reaches element 30, but its storage holds 24"),  # starts after the end
])
def test_load_state_dict_bounds_every_view_by_its_storage(writer, bad_view, expected, fake_torch, tmp_path):
    path = tmp_path / "corrupt.pth"
    writer(path, fake_torch, bad_view=bad_view)
    with pytest.raises(ValueError, match=rf"Checkpoint is corrupt: .*{expected}"):
        load_state_dict(path)


@pytest.mark.parametrize("writer", [_write_legacy, _write_zip])
def test_load_state_dict_refuses_a_storage_of_another_size_than_declared(writer, fake_torch, tmp_path):
    path = tmp_path / "short.pth"
    writer(path, fake_torch, short_storage=True)
    with pytest.raises(ValueError, match=r"Checkpoint is corrupt: storage 0 declares 24 elements"):
        load_state_dict(path)


@pytest.mark.parametrize("writer", [_write_legacy, _write_zip])
def test_load_state_dict_reads_tensors_in_order_with_views(writer, fake_torch, tmp_path):
    path = tmp_path / "model.pth"
    writer(path, fake_torch)
    state = load_state_dict(path)
    assert list(state) == ["conv.weight", "conv.weight_t", "bn.num_batches_tracked"]
    np.testing.assert_array_equal(state["conv.weight"], np.arange(24, dtype="float32").reshape(2, 3, 2, 2))
    np.testing.assert_array_equal(state["conv.weight_t"], np.arange(12, 18, dtype="float32").reshape(2, 3).T)
    assert state["bn.num_batches_tracked"] == 7 and state["bn.num_batches_tracked"].dtype == np.int64


def test_load_state_dict_refuses_arbitrary_classes(tmp_path):
    path = tmp_path / "evil.pth"
    buffer = io.BytesIO()
    for value in (0x1950A86A20F9469CFC6C, 1001, {}):
        pickle.dump(value, buffer, protocol=2)
    pickle.dump(collections.Counter(a=1), buffer, protocol=2)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(pickle.UnpicklingError, match=r"Refusing to load collections\.Counter"):
        load_state_dict(path)


def test_load_state_dict_rejects_other_files(tmp_path):
    path = tmp_path / "notes.pth"
    pickle.dump("hello", path.open("wb"), protocol=2)
    with pytest.raises(ValueError, match=r"Not a PyTorch checkpoint \(bad magic number\)"):
        load_state_dict(path)
