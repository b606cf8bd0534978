#!/usr/bin/env python3
"""A second, independent decryptor for sealstream stores, written only from docs/format.md.

Usage: reference_decrypt.py STORE_DIR PRIVATE_KEY.pem PASSPHRASE_FILE OUT_DIR

Writes OUT_DIR/<session>/<stream>/<seq>-<name> for frames and
OUT_DIR/<session>/<stream>/keystrokes.jsonl for keystroke batches; prints one line per stream.
Exits 1 if any check of docs/format.md fails. Needs the `cryptography` package.
"""
import hashlib
import os
import struct
import sys
import uuid

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

OAEP_LABEL = b"sealstream/1 dek"


class Reader:
    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def take(self, n):
        if self.pos + n > len(self.buf):
            raise ValueError("truncated")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def u(self, fmt):
        size = struct.calcsize(fmt)
        return struct.unpack(">" + fmt, self.take(size))[0]


def parse_chunk(r):
    start = r.pos
    assert r.take(4) == b"SSCK", "chunk magic"
    assert r.u("B") == 1 and r.u("B") == 1, "chunk version/suite"
    kind, flags = r.u("B"), r.u("B")
    assert kind in (1, 2) and flags & 0xFC == 0 and flags != 3
    dek_id, session, stream = r.take(16), r.take(16), r.u("I")
    seq, t = r.u("Q"), r.u("q")
    agent_len = r.u("H")
    assert 1 <= agent_len <= 256
    agent = r.take(agent_len)
    ct_len = r.u("I")
    assert 16 <= ct_len <= 16 * 1024 * 1024 + 16
    aad = r.buf[start:r.pos]
    ct = r.take(ct_len)
    return dict(kind=kind, final=flags & 1, flags=flags, dek_id=dek_id, session=session, stream=stream,
                seq=seq, agent=agent, aad=aad, ct=ct, raw=r.buf[start:r.pos])


def parse_segment(buf):
    body, checksum = buf[:-32], buf[-32:]
    r = Reader(body)
    assert r.take(4) == b"SSSG" and r.u("B") == 1 and r.take(3) == b"\0\0\0"
    r.take(16)
    r.u("q")
    count = r.u("I")
    chunks = [parse_chunk(r) for _ in range(count)]
    assert r.pos == len(body), "segment trailing bytes"
    # checksum = SHA-256(36 header bytes || SHA-256(chunk 1) || ... || SHA-256(chunk n))
    h = hashlib.sha256(body[:36])
    for c in chunks:
        h.update(hashlib.sha256(c["raw"]).digest())
    assert h.digest() == checksum, "segment checksum"
    return chunks


def parse_dek_record(buf):
    r = Reader(buf)
    assert r.take(4) == b"SSDK" and r.u("B") == 1 and r.u("B") == 1
    dek_id, kek_id, _run = r.take(16), r.take(32), r.take(16)
    r.u("q")
    agent = r.take(r.u("H"))
    wrapped = r.take(r.u("H"))
    assert r.pos == len(buf)
    return dict(dek_id=dek_id, kek_id=kek_id, agent=agent, wrapped=wrapped)


def stream_key(dek, dek_id, c):
    info = (b"sealstream/1 stream" + c["session"] + struct.pack(">IBH", c["stream"], c["kind"], len(c["agent"]))
            + c["agent"])
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=dek_id, info=info).derive(dek)


def main(store, key_file, pass_file, out):
    passphrase = open(pass_file, "rb").read()
    if passphrase.endswith(b"\n"):
        passphrase = passphrase[:-1]
    private = serialization.load_pem_private_key(open(key_file, "rb").read(), password=passphrase)
    spki = private.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    kek_id = hashlib.sha256(spki).digest()

    deks, streams = {}, {}
    for root, _, files in os.walk(os.path.join(store, "v1")):
        for f in sorted(files):
            data = open(os.path.join(root, f), "rb").read()
            if f.endswith(".dek"):
                rec = parse_dek_record(data)
                if rec["kek_id"] == kek_id:
                    dek = private.decrypt(rec["wrapped"], padding.OAEP(
                        mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=OAEP_LABEL))
                    assert len(dek) == 32
                    deks[rec["dek_id"]] = (dek, rec["agent"])
            elif f.endswith(".seg"):
                for c in parse_segment(data):
                    key = (c["agent"], c["session"], c["stream"])
                    streams.setdefault(key, {}).setdefault(c["seq"], []).append(c)

    failed = False
    for (agent, session, stream), by_seq in sorted(streams.items()):
        problems, final_seen = [], False
        d = os.path.join(out, str(uuid.UUID(bytes=session)), str(stream))
        os.makedirs(d, exist_ok=True)
        for expect, seq in enumerate(sorted(by_seq)):
            copies = by_seq[seq]
            c = copies[0]
            hole = (expect, seq - 1) if seq != expect else None
            if hole and not c["flags"] & 2:
                problems.append(f"gap before {seq}")
            if any(x["raw"] != c["raw"] for x in copies):
                problems.append(f"conflicting copies of {seq}")
            if final_seen:
                problems.append(f"{seq} after final")
            final_seen = final_seen or bool(c["final"])
            dek, dek_agent = deks[c["dek_id"]]
            assert dek_agent == agent, "DEK belongs to another agent"
            nonce = b"\0\0\0" + struct.pack(">QB", seq, c["final"])
            plain = AESGCM(stream_key(dek, c["dek_id"], c)).decrypt(nonce, c["ct"], c["aad"])
            if c["flags"] & 2:  # gap record: first, last, first time, last time, count
                first, last, _, _, count = struct.unpack(">QQqqQ", plain)
                if hole != (first, last) or count != last - first + 1:
                    problems.append(f"gap record {seq} does not match the hole")
                continue
            if c["kind"] == 1:
                (name_len,) = struct.unpack(">H", plain[:2])
                name = plain[2:2 + name_len].decode()
                open(os.path.join(d, f"{seq:08}-{name}"), "wb").write(plain[2 + name_len:])
            else:
                with open(os.path.join(d, "keystrokes.jsonl"), "ab") as fh:
                    fh.write(plain)
        status = "tampered: " + ", ".join(problems) if problems else ("complete" if final_seen else "incomplete")
        failed = failed or bool(problems)
        print(f"{agent.decode()} {uuid.UUID(bytes=session)} stream {stream}: {len(by_seq)} chunks, {status}")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
