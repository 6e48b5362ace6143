#!/usr/bin/env python3
"""load_checkpoint.py - a libcolt5 checkpoint (docs/formats.md) into PyTorch.

    load_checkpoint.py CKPT.h5 [--reference DIR] [--double]
        builds tools/colt5_torch.py's CoLT5ByteModel(**config["model"]) from the
        checkpoint's "config" attribute and loads /params into it with
        load_state_dict(strict=True), printing each name loaded.
    load_checkpoint.py CKPT.h5 --check-only [--list FILE]
        h5py alone (no torch): the checkpoint's format, dtype, and /params names,
        shapes and element types against FILE (default tests/data/model_state_dict.txt,
        the wrapper's state_dict for the default configuration); /optim, when there,
        must hold the same names and shapes.

--reference DIR (or C5_REFERENCE) names the folder holding the reference's packages
(colt5_attention, local_attention, ...) that colt5_torch.py imports.
Exit status: 0 loaded / checked, 1 a mismatch (every one is printed), 2 usage or I/O.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FORMAT = 1
DTYPES = {"float64": 8, "float32": 4}


def fail_io(msg):
    print(f"load_checkpoint: {msg}", file=sys.stderr)
    sys.exit(2)


def text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def open_checkpoint(path):
    try:
        import h5py
    except ImportError:
        fail_io("h5py is needed (Debian: python3-h5py)")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        fail_io(f"checkpoint {path}: cannot open ({e})")
    for a in ("format", "dtype", "step", "config"):
        if a not in f.attrs:
            fail_io(f"checkpoint {path}: root attribute {a} is missing (not a libcolt5 checkpoint)")
    if int(f.attrs["format"]) != FORMAT:
        fail_io(f"checkpoint {path}: format {int(f.attrs['format'])}, this script reads format {FORMAT}")
    dtype = text(f.attrs["dtype"])
    if dtype not in DTYPES:
        fail_io(f"checkpoint {path}: dtype {dtype!r} (float64 or float32 expected)")
    if "params" not in f:
        fail_io(f"checkpoint {path}: no group /params")
    return f, dtype


def read_list(path):
    want = {}
    try:
        with open(path) as fp:
            for n, line in enumerate(fp, 1):
                line = line.split("#", 1)[0].split()
                if not line:
                    continue
                want[line[0]] = tuple(int(x) for x in line[1:])
    except (OSError, ValueError) as e:
        fail_io(f"{path}: cannot read the state_dict list ({e})")
    return want


def shape_str(s):
    return "[" + ",".join(str(x) for x in s) + "]"


def check(f, path, dtype, want, list_path):
    """Every mismatch as a line; [] when the checkpoint matches the list."""
    errors = []
    size = DTYPES[dtype]
    groups = ["/params"] + [g for g in ("/optim/exp_avg", "/optim/exp_avg_sq") if g in f]
    for g in groups:
        have = f[g]
        for name, shape in want.items():
            if name not in have:
                errors.append(f"checkpoint {path}: dataset {g}/{name} is missing (listed in {list_path})")
                continue
            d = have[name]
            if tuple(d.shape) != shape:
                errors.append(f"checkpoint {path}: dataset {g}/{name} has shape {shape_str(d.shape)}, "
                              f"the list's is {shape_str(shape)}")
            if d.dtype.kind != "f" or d.dtype.itemsize != size:
                errors.append(f"checkpoint {path}: dataset {g}/{name} holds {d.dtype}, the file's dtype is {dtype}")
        for name in have:
            if name not in want:
                errors.append(f"checkpoint {path}: dataset {g}/{name} is not in {list_path}")
    if "state" in f:
        for name, d in f["state"].items():
            if d.dtype.kind != "i" or d.dtype.itemsize != 8 or tuple(d.shape) != (1,):
                errors.append(f"checkpoint {path}: /state/{name} is {d.dtype} {shape_str(d.shape)}, not int64 [1]")
    try:
        json.loads(text(f.attrs["config"]))
    except ValueError as e:
        errors.append(f"checkpoint {path}: the config attribute is not JSON ({e})")
    return errors


def load(f, path, dtype, reference, double):
    if reference:
        sys.path.insert(0, reference)
    sys.path.insert(0, HERE)
    try:
        import torch
        from colt5_torch import CoLT5ByteModel
    except ImportError as e:
        fail_io(f"cannot import torch or tools/colt5_torch.py ({e}); --reference DIR names the reference's packages")
    config = json.loads(text(f.attrs["config"]))
    if "model" not in config:
        fail_io(f"checkpoint {path}: its config has no \"model\" section")
    model = CoLT5ByteModel(**config["model"])
    if double:
        model = model.double()
    state = {name: torch.from_numpy(d[()]) for name, d in f["params"].items()}
    try:
        model.load_state_dict(state, strict=True)   # copies, converting to the model's dtype
    except RuntimeError as e:
        print(f"checkpoint {path}: {e}", file=sys.stderr)
        return 1
    for name in model.state_dict():
        print(f"loaded {name} {shape_str(state[name].shape)}")
    print(f"checkpoint {path}: step {int(f.attrs['step'])}, {len(state)} parameters ({dtype}) loaded into "
          f"CoLT5ByteModel")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--check-only", action="store_true", help="names, shapes and dtypes against --list (h5py only)")
    ap.add_argument("--list", default=os.path.join(HERE, "..", "tests", "data", "model_state_dict.txt"))
    ap.add_argument("--reference", default=os.environ.get("C5_REFERENCE"))
    ap.add_argument("--double", action="store_true", help="load into a float64 model")
    args = ap.parse_args()
    f, dtype = open_checkpoint(args.checkpoint)
    with f:
        if args.check_only:
            want = read_list(args.list)
            errors = check(f, args.checkpoint, dtype, want, args.list)
            for e in errors:
                print(e, file=sys.stderr)
            if not errors:
                print(f"checkpoint {args.checkpoint}: format {FORMAT}, {dtype}, step {int(f.attrs['step'])}: "
                      f"{len(want)} parameters match {args.list}")
            return 1 if errors else 0
        return load(f, args.checkpoint, dtype, args.reference, args.double)


if __name__ == "__main__":
    sys.exit(main())
