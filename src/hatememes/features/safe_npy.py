"""Reading a pickled .npy file (what `np.save(path, a_dict)` writes) without running arbitrary code.

`np.load(path, allow_pickle=True)` unpickles whatever the file holds, and a pickle can call any function it
names (`os.system` included) while it loads. `load_pickled_npy` parses the .npy header with
`numpy.lib.format` and unpickles the payload with an Unpickler whose `find_class` hands out only what numpy
needs to rebuild arrays, dtypes and scalars. Any other global is refused, naming the file and the global,
before anything is called. Plain containers (dict, list, tuple, str, int, float) need no global.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

try:
    from numpy._core import multiarray  # numpy 2
except ImportError:  # numpy 1
    from numpy.core import multiarray

NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")  # numpy 1 writes the first, numpy 2 the second
ALLOWED_GLOBALS = {  # (module, name) as a pickle spells it -> the object it may stand for
    **{(module, "_reconstruct"): multiarray._reconstruct for module in NUMPY_MODULES},  # an ndarray's shell
    **{(module, "scalar"): multiarray.scalar for module in NUMPY_MODULES},  # np.int64(3) and the like
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
HEADER_READERS = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickled .npy file names a global that is not one of numpy's array, dtype or scalar constructors."""


class NumpyOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path):
        super().__init__(file, encoding="latin1")  # latin1: arrays pickled by Python 2 too, as np.load documents
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafePickleError(f"{self.path}: refused to unpickle the forbidden global {module}.{name} "
                                    "(only numpy arrays, dtypes and scalars are allowed; nothing was run)")
        return ALLOWED_GLOBALS[module, name]


def load_pickled_npy(path: Path) -> object:
    """The object that `np.save(path, obj)` stored as a 0-d object array (a dict, for MMF's info files)."""
    with open(path, "rb") as file:
        version = npy_format.read_magic(file)
        if version not in HEADER_READERS:
            raise ValueError(f"{path}: .npy format version {version[0]}.{version[1]} (this reader knows 1.0 and 2.0)")
        shape, _, dtype = HEADER_READERS[version](file)
        if dtype != np.dtype(object) or shape != ():
            raise ValueError(f"{path}: a {dtype} array of shape {shape}, not one pickled object (np.save of a dict)")
        array = NumpyOnlyUnpickler(file, path).load()
    if not isinstance(array, np.ndarray) or array.shape != ():
        raise ValueError(f"{path}: the pickle holds {type(array).__name__}, not the 0-d array np.save writes")
    return array.item()
