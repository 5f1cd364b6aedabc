"""The checksums fastnet documents for model and checkpoint files, computed here
independently of fastnet (tests/core/test_hostile_files.py and test_resume.py forge
files with them)."""
import hashlib
import json

import numpy as np


def arrays_sha256(arrays):
    """The documented checksum of the arrays (name, dtype, shape, bytes; sorted by name),
    computed here independently of fastnet."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        for part in (name, str(a.dtype), str(a.shape)):
            h.update(part.encode())
        h.update(a.tobytes())
    return h.hexdigest()


def with_checksums(meta, arrays):
    """``meta`` given both checksums: ``sha256`` (the arrays) and ``meta_sha256`` (the metadata,
    less itself, as canonical JSON)."""
    meta = json.loads(json.dumps({**{k: v for k, v in meta.items() if k not in ("sha256", "meta_sha256")},
                                  "sha256": arrays_sha256(arrays)}))
    text = json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    meta["meta_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    return meta
