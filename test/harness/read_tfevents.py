#!/usr/bin/env python3
"""Reads a TensorBoard event file as TensorBoard does, written from the format description
(TFRecord framing with masked CRC32C; Event / Summary / Value protobufs), independent of the
TypeScript writer. Prints one JSON object per event: {"wall_time", "step", "file_version"?,
"scalars": {tag: value}}. Exits 1 on a bad length or data CRC."""
import json, struct, sys

def crc32c_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t

TABLE = crc32c_table()

def crc32c(b):
    c = 0xFFFFFFFF
    for x in b:
        c = TABLE[(c ^ x) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF

def masked(b):
    c = crc32c(b)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF

def varint(b, i):
    v = s = 0
    while True:
        x = b[i]; i += 1
        v |= (x & 0x7F) << s; s += 7
        if x < 0x80:
            return v, i

def fields(b):
    i = 0
    while i < len(b):
        key, i = varint(b, i)
        f, w = key >> 3, key & 7
        if w == 0:
            v, i = varint(b, i)
        elif w == 1:
            v = b[i:i + 8]; i += 8
        elif w == 5:
            v = b[i:i + 4]; i += 4
        elif w == 2:
            n, i = varint(b, i); v = b[i:i + n]; i += n
        else:
            raise ValueError("wire type %d" % w)
        yield f, w, v

def event(b):
    out = {"scalars": {}}
    for f, w, v in fields(b):
        if f == 1 and w == 1: out["wall_time"] = struct.unpack("<d", v)[0]
        elif f == 2 and w == 0: out["step"] = v - (1 << 64) if v >= 1 << 63 else v
        elif f == 3 and w == 2: out["file_version"] = v.decode()
        elif f == 5 and w == 2:
            for vf, vw, val in fields(v):
                if vf != 1: continue
                tag, x = None, None
                for ff, ww, vv in fields(val):
                    if ff == 1: tag = vv.decode()
                    elif ff == 2 and ww == 5: x = struct.unpack("<f", vv)[0]
                out["scalars"][tag] = x
    return out

data = open(sys.argv[1], "rb").read()
i = 0
while i < len(data):
    head = data[i:i + 8]
    (n,) = struct.unpack("<Q", head)
    (hc,) = struct.unpack("<I", data[i + 8:i + 12])
    if hc != masked(head): sys.exit("bad length crc at byte %d" % i)
    body = data[i + 12:i + 12 + n]
    (dc,) = struct.unpack("<I", data[i + 12 + n:i + 16 + n])
    if dc != masked(body): sys.exit("bad data crc at byte %d" % i)
    print(json.dumps(event(body)))
    i += 16 + n
