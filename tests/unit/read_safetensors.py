#!/usr/bin/env python3
"""Reads a safetensors file with only json + numpy, independently of the C
reader, and prints one line per tensor: name, shape (dims joined by 'x') and
the float64 sum of its values; then 'meta KEY VALUE' lines. Used by
test_checkpoint to check that what murmur writes is standard safetensors.

Usage: read_safetensors.py FILE"""
import json
import struct
import sys

import numpy as np


def main(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    if (8 + n) % 8 != 0:
        sys.exit("header not padded to a multiple of 8")
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = blob[8 + n:]
    meta = header.pop("__metadata__", {})
    end_max = 0
    for name, t in header.items():
        if t["dtype"] != "F32":
            sys.exit(f"{name}: dtype {t['dtype']}")
        begin, end = t["data_offsets"]
        arr = np.frombuffer(data[begin:end], dtype="<f4").reshape(t["shape"])
        end_max = max(end_max, end)
        dims = "x".join(str(d) for d in t["shape"])
        print(f"{name} {dims} {float(arr.astype(np.float64).sum())!r}")
    if end_max != len(data):
        sys.exit("data section has trailing bytes")
    for k, v in meta.items():
        print(f"meta {k} {v}")


if __name__ == "__main__":
    main(sys.argv[1])
