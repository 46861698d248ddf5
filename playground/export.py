"""A trace's tensors as one `.npz` file (`numpy.load` reads it), for a notebook or another tool.

What the trace keeps is written as it is; every layer's q, k, v, rot_q, rot_k and pattern are recomputed a layer at
a time into files on disk (memory-mapped), so memory stays bounded by one layer whatever the prompt's length.
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .trace import HEAD_STAT_NAMES, LayerTensors, Trace


def export_trace(trace: Trace, resid: np.ndarray, n_layers: int, layer: Callable[[int], LayerTensors],
                 folder: str | Path | None = None) -> Path:
    """Write the trace (its residual streams `resid`, and `layer(l)` for each layer) to folder/trace.npz."""
    path = Path(folder or tempfile.mkdtemp(prefix="trace-")) / "trace.npz"
    small = dict(ids=trace.ids, prompt=np.array(trace.prompt), chat=np.array(trace.chat),
                 token_bytes=np.array([b.hex() for b in trace.token_bytes]), special=trace.special,
                 surprisal=trace.surprisal, next_logits=trace.next_logits, resid=resid,
                 head_stats=trace.head_stats, head_stat_names=np.array(HEAD_STAT_NAMES))
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(path, "w", allowZip64=True) as npz:
        for name, array in small.items():
            with npz.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)
        stacked: dict[str, np.memmap] = {}
        for l in range(n_layers):
            tensors = layer(l)
            for name, array in vars(tensors).items():
                if name not in stacked:
                    stacked[name] = np.lib.format.open_memmap(Path(tmp) / f"{name}.npy", mode="w+",
                                                              dtype=array.dtype, shape=(n_layers, *array.shape))
                stacked[name][l] = array
        for name, array in stacked.items():
            array.flush()
            del array
            npz.write(Path(tmp) / f"{name}.npy", f"{name}.npy")
        stacked.clear()
    return path
