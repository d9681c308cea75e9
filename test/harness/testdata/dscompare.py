#!/usr/bin/python3
"""dscompare.py A B: exit 0 when the data sets of two DICOM files are equal.

Compared: every element outside the file meta information, recursively
through sequences, except group lengths (gggg,0000) and Data Set Trailing
Padding (FFFC,FFFC), which encoders may add or drop (DCMTK drops the
padding whenever it writes a data set, so storescu never sends it). Values are compared as pydicom decodes them, so a data set in
another byte order or VR encoding compares equal when its values are.
Differences are printed, one per line."""
import sys
import pydicom


def norm(ds, path=""):
    out = {}
    for el in ds:
        if el.tag.element == 0 or el.tag == 0xFFFCFFFC:
            continue
        key = f"{path}{el.tag}"
        if el.VR == "SQ":
            for i, item in enumerate(el.value):
                out.update(norm(item, f"{key}[{i}]."))
            out[key] = f"SQ len={len(el.value)}"
        else:
            v = el.value
            if isinstance(v, bytes):
                v = v.rstrip(b"\x00 ") if el.tag != 0x7FE00010 else v
            out[key] = (str(v) if not isinstance(v, bytes) else v)
    return out


def main():
    a = norm(pydicom.dcmread(sys.argv[1], force=True))
    b = norm(pydicom.dcmread(sys.argv[2], force=True))
    diffs = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            va, vb = repr(a.get(k))[:80], repr(b.get(k))[:80]
            diffs.append(f"{k}: {va} != {vb}")
    for d in diffs[:20]:
        print(d)
    sys.exit(1 if diffs else 0)


main()
