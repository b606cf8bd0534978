#!/usr/bin/env python3
"""A second, independent decryptor and verifier for sealstream stores (format versions 1 and 2),
written only from docs/format.md.

Usage: reference_decrypt.py [--agent-ca CA.pem] STORE_DIR PRIVATE_KEY.pem PASSPHRASE_FILE OUT_DIR
       reference_decrypt.py --verify STORE_DIR [--agent-ca CA.pem]

The first form decrypts: it writes OUT_DIR/<session>/<stream>/<seq>-<name> for frames and
OUT_DIR/<session>/<stream>/keystrokes.jsonl for keystroke batches. The second (--verify) runs
every check that needs no private key (structure, segment checksums, object names, sequence
numbers, duplicates, final flag, DEK records, signatures) and decrypts nothing. Both print a line
per damaged object and one per stream:

  <agent> <session> stream <id>: <n> chunks, <status>; <proof>

where <status> is `complete`, `incomplete` (no final chunk), `tampered: <why>` or (decrypting)
`not opened, no key: <why>`, and <proof> is `unsigned` (version 1), `signed by sha256:<agent
certificate> up to checkpoint <seq>, <u> unproven` (version 2; followed by `(signature valid, CA
not checked)` without --agent-ca) or `signature invalid`. --agent-ca pins the agent CA
certificate that must have issued every version-2 DEK record's certificate. Only v1/deks/ and
v1/segments/ hold recordings; other keys of the store are counted, not read.

Exit status: 0 every check passed (incomplete, unproven and unsigned streams included); 1 a check
failed (tampering or corruption, or a stream whose DEK is not under the given key); 2 usage or
I/O error (arguments, unreadable key, passphrase, CA certificate, store or output directory).
Needs the `cryptography` package (>= 40).
"""
import argparse
import datetime
import hashlib
import json
import os
import struct
import sys
import unicodedata
import uuid

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

OAEP_LABEL = b"sealstream/1 dek"
DEK_RECORD_CONTEXT = b"sealstream/2 dek record"
CHECKPOINT_CONTEXT = b"sealstream/2 checkpoint"
MAX_PLAINTEXT = 16 * 1024 * 1024
MAX_SEGMENT = 1 << 30
MAX_CHUNKS = 1 << 20
# The largest DEK record: 82 + agent 256 + wrapped 512 + 2 + cert 4096 + 4 + signature 512.
MAX_DEK_RECORD = 82 + 256 + 512 + 2 + 4096 + 4 + 512
# TLS SignatureScheme code point: (name, curve or None for Ed25519, hash).
SCHEMES = {
    0x0403: ("ECDSA P-256 SHA-256", ec.SECP256R1, hashes.SHA256),
    0x0503: ("ECDSA P-384 SHA-384", ec.SECP384R1, hashes.SHA384),
    0x0807: ("Ed25519", None, None),
}
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


class Bad(Exception):
    """An object, structure or signature that breaks a rule of docs/format.md."""


class UsageError(Exception):
    """Bad arguments or an unreadable input file: nothing is claimed about the store."""


def need(ok, why):
    if not ok:
        raise Bad(why)


def span(first, last):
    return f"{first}" if first == last else f"{first}..{last}"


def utc(us):
    try:
        return EPOCH + datetime.timedelta(microseconds=us)
    except OverflowError:
        raise Bad(f"time {us} us is out of range") from None


class Reader:
    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def take(self, n):
        need(self.pos + n <= len(self.buf), "truncated")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def u(self, fmt):
        size = struct.calcsize(fmt)
        return struct.unpack(">" + fmt, self.take(size))[0]


# ---------------------------------------------------------------------------------------------
# Structures

def read_version(r, what, known):
    v = r.u("B")
    need(v in known, f"unknown {what} version {v}")
    return v


def read_suite(r, what):
    s = r.u("B")
    need(s == 1, f"unknown {what} cipher suite {s}")


def read_agent(r):
    """agent_len u16 | agent: UTF-8, 1..=64 characters, 1..=256 bytes, no control character."""
    n = r.u("H")
    need(1 <= n <= 256, f"agent_len {n} is not in 1..=256")
    raw = r.take(n)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Bad("agent id is not UTF-8") from None
    need(len(text) <= 64, "agent id is longer than 64 characters")
    need(not any(unicodedata.category(ch) == "Cc" for ch in text), "agent id has a control character")
    return raw


def read_signature(r):
    """scheme u16 | sig_len u16 | signature."""
    scheme = r.u("H")
    need(scheme in SCHEMES, f"unknown signature scheme 0x{scheme:04x}")
    sig_len = r.u("H")
    need(1 <= sig_len <= 512, f"sig_len {sig_len} is not in 1..=512")
    return scheme, r.take(sig_len)


def parse_chunk(r):
    start = r.pos
    need(r.take(4) == b"SSCK", "not a sealed chunk (magic)")
    version = read_version(r, "chunk", (1, 2))
    read_suite(r, "chunk")
    kind, flags = r.u("B"), r.u("B")
    need(kind in (1, 2), f"unknown chunk kind {kind}")
    allowed = 0x07 if version == 2 else 0x03  # bit 2 (checkpoint) only in version 2
    need(flags & ~allowed == 0, f"flags 0x{flags:02x} not allowed in a version {version} chunk")
    need(flags & 3 != 3, "a chunk cannot be both final and a gap record")
    dek_id, session, stream = r.take(16), r.take(16), r.u("I")
    seq, capture_us = r.u("Q"), r.u("q")
    agent = read_agent(r)
    ct_len = r.u("I")
    need(16 <= ct_len <= MAX_PLAINTEXT + 16, f"ct_len {ct_len} is not in 16..={MAX_PLAINTEXT + 16}")
    aad = r.buf[start:r.pos]  # everything before the ciphertext
    ct = r.take(ct_len)
    core = r.buf[start:r.pos]  # all but a checkpoint's scheme, length and signature
    scheme, sig = read_signature(r) if flags & 4 else (None, None)
    return dict(version=version, kind=kind, flags=flags, final=flags & 1, gap=bool(flags & 2),
                checkpoint=bool(flags & 4), dek_id=dek_id, session=session, stream=stream, seq=seq,
                capture_us=capture_us, agent=agent, aad=aad, ct=ct, core=core, scheme=scheme, sig=sig,
                raw=r.buf[start:r.pos])


def parse_segment(buf):
    """Returns (segment_id, created_us, chunks)."""
    need(68 <= len(buf) <= MAX_SEGMENT, f"segment size {len(buf)} is not in 68..={MAX_SEGMENT}")
    body, checksum = buf[:-32], buf[-32:]
    r = Reader(body)
    need(r.take(4) == b"SSSG", "not a segment object (magic)")
    read_version(r, "segment", (1,))
    need(r.take(3) == b"\0\0\0", "segment reserved bytes are not zero")
    segment_id, created_us, count = r.take(16), r.u("q"), r.u("I")
    need(segment_id[:8] == struct.pack(">q", created_us), "segment_id does not start with created_us")
    need(count <= MAX_CHUNKS, f"chunk_count {count} is over {MAX_CHUNKS}")
    chunks = []
    for i in range(count):
        try:
            chunks.append(parse_chunk(r))
        except Bad as e:
            raise Bad(f"chunk {i} of the segment: {e}") from None
    need(r.pos == len(body), "bytes left between the last chunk and the checksum")
    # checksum = SHA-256(36 header bytes || SHA-256(chunk 1) || ... || SHA-256(chunk n))
    h = hashlib.sha256(body[:36])
    for c in chunks:
        h.update(hashlib.sha256(c["raw"]).digest())
    need(h.digest() == checksum, "segment checksum does not match")
    return segment_id, created_us, chunks


def parse_dek_record(buf):
    r = Reader(buf)
    need(r.take(4) == b"SSDK", "not a DEK record (magic)")
    version = read_version(r, "DEK record", (1, 2))
    read_suite(r, "DEK record")
    dek_id, kek_id, _run = r.take(16), r.take(32), r.take(16)
    created_us = r.u("q")
    agent = read_agent(r)
    wrapped_len = r.u("H")
    need(256 <= wrapped_len <= 512, f"wrapped_len {wrapped_len} is not in 256..=512")
    rec = dict(version=version, dek_id=dek_id, kek_id=kek_id, created_us=created_us, agent=agent,
               wrapped=r.take(wrapped_len), cert=None, scheme=None, sig=None, signed=None)
    if version == 2:
        cert_len = r.u("H")
        need(1 <= cert_len <= 4096, f"cert_len {cert_len} is not in 1..=4096")
        rec["cert"] = r.take(cert_len)
        rec["signed"] = buf[:r.pos]  # everything up to and including cert
        rec["scheme"], rec["sig"] = read_signature(r)
    need(r.pos == len(buf), "bytes after the end of the DEK record")
    return rec


# ---------------------------------------------------------------------------------------------
# Signatures and certificates

def verify_signature(public_key, scheme, sig, message):
    """Raises Bad unless `sig` is `public_key`'s signature of `message` under `scheme`."""
    name, curve, digest = SCHEMES[scheme]
    if curve is None:
        need(isinstance(public_key, ed25519.Ed25519PublicKey), f"{name} signature but the key is not Ed25519")
    else:
        need(isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(public_key.curve, curve),
             f"{name} signature but the key is not on {curve.name}")
    try:
        if curve is None:
            public_key.verify(sig, message)
        else:
            public_key.verify(sig, message, ec.ECDSA(digest()))
    except (InvalidSignature, ValueError):
        raise Bad(f"{name} signature does not verify") from None


def cert_time(cert, which):
    t = getattr(cert, which + "_utc", None)  # cryptography >= 42
    return t if t is not None else getattr(cert, which).replace(tzinfo=datetime.timezone.utc)


def check_dek_signature(rec, ca):
    """A version-2 DEK record: its signature by its certificate's key, then whether the certificate
    is the agent's (subject CN, clientAuth, valid at created_us) and, with a CA, issued by it."""
    try:
        cert = x509.load_der_x509_certificate(rec["cert"])
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as e:
        raise Bad(f"certificate does not parse: {e}") from None
    verify_signature(key, rec["scheme"], rec["sig"], DEK_RECORD_CONTEXT + rec["signed"])
    names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    need(names == [rec["agent"].decode()], f"certificate subject CN {names} is not the record's agent")
    at = utc(rec["created_us"])
    need(cert_time(cert, "not_valid_before") <= at <= cert_time(cert, "not_valid_after"),
         f"certificate was not valid at the record's created_us ({at:%Y-%m-%dT%H:%M:%SZ})")
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = []
    need(ExtendedKeyUsageOID.CLIENT_AUTH in usages, "certificate lacks the clientAuth extended key usage")
    if ca is not None:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            raise Bad("certificate was not issued by the pinned agent CA") from None
    return key


def chain_proof(chunks, deks):
    """The hash chain over the cores of the chunks present, in seq order, and every checkpoint's
    signature. Returns (problems, seq of the last checkpoint, chunks after it)."""
    head, problems, last, proven = bytes(32), [], None, 0
    for i, c in enumerate(chunks):
        head = hashlib.sha256(head + hashlib.sha256(c["core"]).digest()).digest()
        if not c["checkpoint"]:
            continue
        rec = deks.get(c["dek_id"])
        if rec is None or rec.get("key") is None:
            continue  # reported by check_membership
        try:
            verify_signature(rec["key"], c["scheme"], c["sig"], CHECKPOINT_CONTEXT + head)
            last, proven = c["seq"], i + 1
        except Bad as e:
            problems.append(f"checkpoint {c['seq']}: {e}")
    return problems, last, len(chunks) - proven


# ---------------------------------------------------------------------------------------------
# The store

def segment_key(segment_id, created_us):
    d = utc(created_us)
    return f"v1/segments/{d.year:04}-{d.month:02}-{d.day:02}/{segment_id.hex()}.seg"


def dek_record_key(rec):
    return f"v1/deks/{rec['agent'].hex()}/{rec['dek_id'].hex()}.dek"


def read_limited(path, low, high, what):
    size = os.path.getsize(path)
    need(low <= size <= high, f"{what} of {size} bytes is not in {low}..={high}")
    with open(path, "rb") as f:
        return f.read()


def read_object(store, key, deks, chunks):
    """Reads one object, checking its key against its contents. Returns "segment" or "dek"."""
    path = os.path.join(store, *key.split("/"))
    if key.startswith("v1/segments/") and key.endswith(".seg"):
        segment_id, created_us, found = parse_segment(read_limited(path, 68, MAX_SEGMENT, "segment object"))
        expected = segment_key(segment_id, created_us)
        need(key == expected, f"misplaced: this segment's key is {expected}")
        chunks.extend(found)
        return "segment"
    if key.startswith("v1/deks/") and key.endswith(".dek"):
        rec = parse_dek_record(read_limited(path, 1, MAX_DEK_RECORD, "DEK record"))
        expected = dek_record_key(rec)
        need(key == expected, f"misplaced: this DEK record's key is {expected}")
        deks[rec["dek_id"]] = rec
        return "dek"
    raise Bad("not a sealstream object key (v1/segments/<date>/<id>.seg or v1/deks/<agent>/<id>.dek)")


def store_keys(store):
    """Every object key of the store, sorted."""
    keys = []
    for dirpath, dirnames, files in os.walk(store):
        dirnames.sort()
        # A name with '#' is a local store's staging file (format.md "Store layout"): not an object.
        keys += [os.path.relpath(os.path.join(dirpath, f), store).replace(os.sep, "/")
                 for f in sorted(files) if "#" not in f]
    return keys


def read_store(store, ca):
    """Every object under STORE_DIR/v1/deks and v1/segments: (DEK records by id, chunks, counts,
    damaged objects). Other keys (not recordings: the format does not define them) are counted."""
    deks, chunks, damaged, counts = {}, [], [], {"segment": 0, "dek": 0, "other": 0}
    for key in store_keys(store):
        if not key.startswith(("v1/deks/", "v1/segments/")):
            counts["other"] += 1
            continue
        try:
            counts[read_object(store, key, deks, chunks)] += 1
        except Bad as e:
            damaged.append(f"{key}: {e}")
    for rec in deks.values():
        rec["key"] = None
        if rec["version"] == 2:
            try:
                rec["key"] = check_dek_signature(rec, ca)
                rec["fingerprint"] = hashlib.sha256(rec["cert"]).hexdigest()
            except Bad as e:
                rec["invalid"] = str(e)
                damaged.append(f"{dek_record_key(rec)}: {e}")
    return deks, chunks, counts, damaged


def group_streams(chunks):
    """(agent, session, stream) -> seq -> the different chunks stored under it (identical copies count once)."""
    streams = {}
    for c in chunks:
        copies = streams.setdefault((c["agent"], c["session"], c["stream"]), {}).setdefault(c["seq"], [])
        if all(x["raw"] != c["raw"] for x in copies):
            copies.append(c)
    return streams


# ---------------------------------------------------------------------------------------------
# Verifying a stream

def check_sequence(by_seq):
    """Checks 1 to 3: numbers without gaps (but before a gap record), one chunk per number, nothing
    after the final chunk. Returns (problems, holes: gap record seq -> (first, last) missing)."""
    problems, holes, expect, final_at = [], {}, 0, None
    for seq in sorted(by_seq):
        c = by_seq[seq][0]
        if len(by_seq[seq]) > 1:
            problems.append(f"{len(by_seq[seq])} different chunks under seq {seq}")
        if final_at is not None:
            problems.append(f"chunk {seq} follows the final chunk {final_at}")
        if c["gap"]:
            if seq == expect:
                problems.append(f"gap record {seq} follows no missing chunks")
            else:
                holes[seq] = (expect, seq - 1)
        elif seq != expect:
            problems.append(f"chunk {span(expect, seq - 1)} missing")
        if c["final"] and final_at is None:
            final_at = seq
        expect = seq + 1
    return problems, holes


def check_membership(chunks, deks):
    """Check 4: every chunk has the stream's kind and a DEK record that names its agent."""
    problems, kind = [], chunks[0]["kind"]
    for c in chunks:
        if c["kind"] != kind:
            problems.append(f"chunk {c['seq']} is of kind {c['kind']}, the stream's is {kind}")
        rec = deks.get(c["dek_id"])
        if rec is None:
            problems.append(f"no readable DEK record {c['dek_id'].hex()}")
        elif rec["agent"] != c["agent"]:
            problems.append(f"DEK record {c['dek_id'].hex()} belongs to another agent")
    return list(dict.fromkeys(problems))


def check_signing(chunks, deks):
    """Check 6, first part: the DEK records' signatures and certificates (checked once, in
    read_store) and, for a version-2 stream, one chunk version, one DEK and a signed DEK record."""
    problems, dek_ids = [], {c["dek_id"] for c in chunks}
    for d in dek_ids:
        if d in deks and deks[d].get("invalid"):
            problems.append(f"DEK record {d.hex()}: {deks[d]['invalid']}")
    if any(c["version"] == 2 for c in chunks):
        if any(c["version"] != 2 for c in chunks):
            problems.append("the stream mixes chunk versions 1 and 2")
        if len(dek_ids) > 1:
            problems.append(f"the stream's chunks are sealed under {len(dek_ids)} DEKs")
        for d in dek_ids:
            if d in deks and deks[d]["version"] != 2:
                problems.append(f"version-2 chunks under the unsigned (version 1) DEK record {d.hex()}")
    else:
        # A signing agent seals only version 2: version-1 chunks under its signed DEK were
        # sealed by someone who unwrapped the DEK.
        for d in dek_ids:
            if d in deks and deks[d]["version"] == 2:
                problems.append(f"unsigned (version 1) chunks under DEK {d.hex()}, whose record its agent signed")
    return problems


def proof_of(chunks, deks, ca):
    """Check 6. Returns (problems, the proof as printed)."""
    problems = check_signing(chunks, deks)
    if not any(c["version"] == 2 for c in chunks):
        return problems, "unsigned"
    rec = deks.get(chunks[0]["dek_id"])
    if problems or rec is None or rec.get("key") is None:
        return problems, "signature invalid"
    problems, last, unproven = chain_proof(chunks, deks)
    if problems:
        return problems, "signature invalid"
    proof = f"signed by sha256:{rec['fingerprint']}"
    proof += f" up to checkpoint {last}" if last is not None else ", no checkpoint"
    proof += f", {unproven} unproven"
    return [], proof + ("" if ca is not None else " (signature valid, CA not checked)")


# ---------------------------------------------------------------------------------------------
# Decrypting

def stream_key(dek, dek_id, c):
    info = (b"sealstream/1 stream" + c["session"] + struct.pack(">IBH", c["stream"], c["kind"], len(c["agent"]))
            + c["agent"])
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=dek_id, info=info).derive(dek)


def unwrap(rec, private, kek_id):
    """The record's DEK, None if it is wrapped under another KEK; raises Bad if it does not unwrap."""
    if "dek" not in rec:
        rec["dek"] = None
        if rec["kek_id"] == kek_id:
            try:
                rec["dek"] = private.decrypt(rec["wrapped"], padding.OAEP(
                    mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=OAEP_LABEL))
            except ValueError:
                rec["dek"] = Bad(f"DEK record {rec['dek_id'].hex()}: the wrapped DEK does not unwrap")
            else:
                if len(rec["dek"]) != 32:
                    rec["dek"] = Bad(f"DEK record {rec['dek_id'].hex()}: the unwrapped DEK is not 32 bytes")
    if isinstance(rec["dek"], Bad):
        raise rec["dek"]
    return rec["dek"]


def frame_file(seq, plain):
    """A frame's (file name, image bytes); None for an empty chunk."""
    if not plain:
        return None
    need(len(plain) >= 2, "frame shorter than its name length")
    (name_len,) = struct.unpack(">H", plain[:2])
    need(name_len <= 255 and len(plain) >= 2 + name_len, f"frame name_len {name_len} is invalid")
    try:
        name = plain[2:2 + name_len].decode("utf-8")
    except UnicodeDecodeError:
        raise Bad("frame name is not UTF-8") from None
    need(not any(ch in name for ch in "/\\\0") and name not in (".", ".."), f"frame name {name!r} is not allowed")
    return f"{seq:08}-{name}", plain[2 + name_len:]


def check_keystrokes(plain):
    """A keystroke batch: JSON objects, one per line, each line ending in LF."""
    need(not plain or plain.endswith(b"\n"), "keystroke batch does not end with a line feed")
    for line in plain.split(b"\n")[:-1]:
        try:
            need(isinstance(json.loads(line.decode("utf-8")), dict), "a keystroke line is not a JSON object")
        except (UnicodeDecodeError, ValueError):
            raise Bad("a keystroke line is not UTF-8 JSON") from None


def check_gap(seq, plain, hole):
    """A gap record's 40 bytes: first_seq, last_seq, first and last capture time, count. Its range
    must be exactly the missing numbers. Returns the gap as printed."""
    need(len(plain) == 40, f"gap record {seq} is {len(plain)} bytes, not 40")
    first, last, t0, t1, count = struct.unpack(">QQqqQ", plain)
    need(hole == (first, last) and last + 1 == seq and count == last - first + 1,
         f"gap record {seq} declares {span(first, last)} ({count}) but {span(*hole) if hole else 'nothing'} is missing")
    when = f"{utc(t0):%Y-%m-%dT%H:%M:%SZ} to {utc(t1):%Y-%m-%dT%H:%M:%SZ}"
    return f"gap {span(first, last)} ({count} dropped, captured {when})"


def open_stream(chunks, holes, deks, private, kek_id, d):
    """Check 5: opens every chunk, writes frames and keystrokes under d. Returns (problems, DEKs
    under another KEK, gaps)."""
    problems, no_key, gaps, keys, keystrokes = [], [], [], {}, None
    for c in chunks:
        seq, rec = c["seq"], deks.get(c["dek_id"])
        if rec is None or rec["agent"] != c["agent"]:
            continue  # reported by check_membership
        try:
            dek = unwrap(rec, private, kek_id)
        except Bad as e:
            problems.append(str(e))
            continue
        if dek is None:
            no_key.append(f"DEK {c['dek_id'].hex()} is wrapped under KEK sha256:{rec['kek_id'].hex()}")
            continue
        if c["dek_id"] not in keys:
            keys[c["dek_id"]] = stream_key(dek, c["dek_id"], c)
        nonce = b"\0\0\0" + struct.pack(">QB", seq, c["final"])
        try:
            plain = AESGCM(keys[c["dek_id"]]).decrypt(nonce, c["ct"], c["aad"])
        except InvalidTag:
            problems.append(f"chunk {seq}: authentication failed")
            continue
        try:
            if c["gap"]:
                gaps.append(check_gap(seq, plain, holes.get(seq)))
            elif c["kind"] == 1:
                frame = frame_file(seq, plain)
                if frame:
                    with open(os.path.join(d, frame[0]), "wb") as fh:
                        fh.write(frame[1])
            else:
                check_keystrokes(plain)
                keystrokes = (keystrokes or b"") + plain
        except Bad as e:
            problems.append(f"chunk {seq}: {e}")
    if keystrokes is not None:
        with open(os.path.join(d, "keystrokes.jsonl"), "wb") as fh:
            fh.write(keystrokes)
    return list(dict.fromkeys(problems)), list(dict.fromkeys(no_key)), gaps


# ---------------------------------------------------------------------------------------------

def read_passphrase(path):
    """The passphrase, without at most one final LF or CRLF; another LF is an error."""
    with open(path, "rb") as f:
        data = f.read()
    data = data[:-2] if data.endswith(b"\r\n") else data[:-1] if data.endswith(b"\n") else data
    if b"\n" in data:
        raise UsageError(f"{path}: the passphrase file has more than one line")
    return data


def load_private_key(key_file, pass_file):
    try:
        with open(key_file, "rb") as f:
            pem = f.read()
        private = serialization.load_pem_private_key(pem, password=read_passphrase(pass_file))
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise UsageError(f"cannot load the private key {key_file}: {e}") from None
    if not isinstance(private, rsa.RSAPrivateKey):
        raise UsageError(f"{key_file} is not an RSA private key")
    spki = private.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, hashlib.sha256(spki).digest()


def load_ca(path):
    try:
        with open(path, "rb") as f:
            return x509.load_pem_x509_certificate(f.read())
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot load the agent CA certificate {path}: {e}") from None


def run(store, ca, private=None, kek_id=None, out=None):
    """Checks (and with a private key decrypts) every stream; prints a line each. Returns the exit status."""
    if not os.path.isdir(store):
        raise UsageError(f"{store} is not a directory")
    deks, chunks, counts, damaged = read_store(store, ca)
    for line in damaged:
        print(f"damaged object {line}")
    streams = group_streams(chunks)
    failed = bool(damaged)
    for (agent, session, stream), by_seq in sorted(streams.items()):
        present = [by_seq[s][0] for s in sorted(by_seq)]
        problems, holes = check_sequence(by_seq)
        problems += check_membership(present, deks)
        signature_problems, proof = proof_of(present, deks, ca)
        if private is not None:
            d = os.path.join(out, str(uuid.UUID(bytes=session)), str(stream))
            os.makedirs(d, exist_ok=True)
            opened, no_key, gaps = open_stream(present, holes, deks, private, kek_id, d)
            problems += opened
        else:
            no_key = []
            gaps = [f"gap {span(*h)} ({h[1] - h[0] + 1} missing, range not read without a key)" for h in holes.values()]
        problems += signature_problems
        final = present[-1]["final"]
        if problems:
            status = "tampered: " + ", ".join(problems)
        elif no_key:
            status = "not opened, no key: " + ", ".join(no_key)
        else:
            status = ("complete" if final else "incomplete") + "".join(", " + g for g in gaps)
        failed = failed or bool(problems or no_key)
        print(f"{agent.decode()} {uuid.UUID(bytes=session)} stream {stream}: {len(by_seq)} chunks, {status}; {proof}")
    print(f"store: {counts['segment']} segment objects, {counts['dek']} DEK records, {len(streams)} streams, "
          f"{len(damaged)} damaged objects, {counts['other']} other objects not read")
    return 1 if failed else 0


def main(argv):
    parser = argparse.ArgumentParser(
        usage="%(prog)s [--agent-ca CA.pem] STORE_DIR PRIVATE_KEY.pem PASSPHRASE_FILE OUT_DIR\n"
              "       %(prog)s --verify STORE_DIR [--agent-ca CA.pem]",
        description="Decrypts or verifies a sealstream store, following docs/format.md.")
    parser.add_argument("--verify", metavar="STORE_DIR", help="check without a private key; decrypt nothing")
    parser.add_argument("--agent-ca", metavar="CA.pem",
                        help="the agent CA certificate that must have issued the agents' certificates")
    parser.add_argument("args", nargs="*", metavar="STORE_DIR PRIVATE_KEY.pem PASSPHRASE_FILE OUT_DIR")
    a = parser.parse_args(argv)
    if (a.verify is None) != (len(a.args) == 4) or (a.verify is not None and a.args):
        parser.error("give either STORE_DIR PRIVATE_KEY.pem PASSPHRASE_FILE OUT_DIR, or --verify STORE_DIR")
    try:
        ca = load_ca(a.agent_ca) if a.agent_ca else None
        if a.verify is not None:
            return run(a.verify, ca)
        store, key_file, pass_file, out = a.args
        private, kek_id = load_private_key(key_file, pass_file)
        try:
            os.makedirs(out, exist_ok=True)
        except OSError as e:
            raise UsageError(f"cannot create {out}: {e}") from None
        return run(store, ca, private, kek_id, out)
    except OSError as e:
        print(f"reference_decrypt.py: I/O error: {e}", file=sys.stderr)
        return 2
    except UsageError as e:
        print(f"reference_decrypt.py: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
