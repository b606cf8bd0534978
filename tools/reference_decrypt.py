#!/usr/bin/env python3
"""A second, independent decryptor and verifier for sealstream stores (format versions 1 and 2),
written only from docs/format.md.

Usage: reference_decrypt.py [--agent-ca CA.pem] [--allow-incomplete] [--json FILE]
                            STORE_DIR PRIVATE_KEY.pem PASSPHRASE_FILE OUT_DIR
       reference_decrypt.py --verify STORE_DIR [--agent-ca CA.pem] [--allow-incomplete] [--json FILE]

The first form decrypts: it writes OUT_DIR/<session>/<stream>/<seq>-<name> for frames, but for a
screen update (a frame named <stem>.ssu) OUT_DIR/<session>/<stream>/<seq>-<stem>.png, the whole
screen the stream's updates make up to it (format.md "Compositing"), as an 8-bit RGB PNG; and
OUT_DIR/<session>/<stream>/keystrokes.jsonl or activity.jsonl for keystroke or activity batches
(no file for a stream without events), for a stream whose verdict is ok; any other stream's
files go under OUT_DIR/@quarantine/<session>/<stream>/. The second (--verify) runs every check
that needs no private key (structure, segment checksums, object names, sequence numbers,
duplicates, final flag, DEK records, signatures and certificates) and decrypts nothing. Both
print a line per damaged object and one per stream:

  <agent> <session> stream <id>: <n> chunks, <status>; <proof>; verdict <verdict>

where <status> is `complete`, `incomplete` (no final chunk), `tampered: <why>`, `no DEK record:
<id>`, (decrypting) `malformed: <why>` or `not opened, no key: <why>`, <proof> is `unsigned`
(version 1), `signed by sha256:<agent certificate> up to checkpoint <seq>, <u> unproven`
(version 2; followed by `(signature valid, CA not checked)` without --agent-ca) or `signature
invalid`, and <verdict> is format.md's ("Verdicts and exit codes"). --agent-ca pins the agent CA
certificate that must have issued every version-2 DEK record's certificate. --json FILE also
writes {"outcome", "damaged_objects", "streams": [{agent, session, stream, kind, chunks,
first_capture_us, last_capture_us, verdict, proof, problems, malformed_chunks, files}]}.
Only v1/deks/ and v1/segments/ hold recordings; other keys of the store are counted, not read;
a key with `#` in it is a staging file, not an object.

Exit status, as format.md's table gives it for sealstream: 0 ok; 3 tampering or a damaged
object; 6 a DEK record is missing; 4 (decrypting) a stream's DEK is under another KEK; 5
(decrypting) authentic chunks whose payload does not parse; 7 a stream unsigned (with
--agent-ca), incomplete or unproven (with --agent-ca; --allow-incomplete accepts the last two);
the first that applies in that order. 1 usage or I/O error (arguments, unreadable key,
passphrase, CA certificate, store or output directory; 2 when argparse refuses the arguments).
Needs the `cryptography` package (>= 40); PNGs are read and written here with zlib alone (only
8-bit RGB, non-interlaced: the one form a screen update's rectangles take).
"""
import argparse
import calendar
import datetime
import hashlib
import json
import os
import shutil
import struct
import sys
import unicodedata
import uuid
import zlib

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

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
# Keystroke events: the deepest nesting of objects and arrays (the event's object is level 1).
MAX_EVENT_DEPTH = 128
# Chunk kinds, as the JSON report names a stream's kind; and the file each kind of event batch goes to.
KINDS = {1: "frames", 2: "keystrokes", 3: "activity"}
EVENT_FILES = {2: "keystrokes.jsonl", 3: "activity.jsonl"}
# Verdicts, worst first, with their exit codes (format.md "Verdicts and exit codes").
VERDICTS = ["tampered", "no_dek_record", "no_key", "malformed", "unsigned", "incomplete", "unproven", "ok"]
EXIT = {"tampered": 3, "no_dek_record": 6, "no_key": 4, "malformed": 5, "unsigned": 7, "incomplete": 7,
        "unproven": 7, "ok": 0}
WAIVABLE = ("incomplete", "unproven")
QUARANTINE = "@quarantine"


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
    need(kind in KINDS, f"unknown chunk kind {kind}")
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
# Signatures and certificates (format.md "Agent certificates")

OID_COMMON_NAME = "2.5.4.3"
OID_CLIENT_AUTH = "1.3.6.1.5.5.7.3.2"
# Extensions a reader understands; any other marked critical makes the certificate unreadable.
KNOWN_EXTENSIONS = {
    "2.5.29.15": "keyUsage", "2.5.29.17": "subjectAltName", "2.5.29.19": "basicConstraints",
    "2.5.29.30": "nameConstraints", "2.5.29.31": "cRLDistributionPoints", "2.5.29.37": "extKeyUsage",
    "1.3.6.1.4.1.11129.2.4.2": "signedCertificateTimestampList",
}
# The algorithms an agent CA may sign with: OID -> (kind, hash, allowed parameters).
CA_ALGORITHMS = {
    "1.2.840.10045.4.3.2": ("ecdsa", hashes.SHA256, (None,)),
    "1.2.840.10045.4.3.3": ("ecdsa", hashes.SHA384, (None,)),
    "1.3.101.112": ("ed25519", None, (None,)),
    "1.2.840.113549.1.1.11": ("rsa", hashes.SHA256, (None, b"\x05\x00")),
    "1.2.840.113549.1.1.12": ("rsa", hashes.SHA384, (None, b"\x05\x00")),
    "1.2.840.113549.1.1.13": ("rsa", hashes.SHA512, (None, b"\x05\x00")),
}


def der(buf, pos, what):
    """One DER TLV at `pos`: (tag, start of contents, end). Definite lengths, minimal form."""
    need(pos + 2 <= len(buf), f"{what}: truncated")
    tag, first = buf[pos], buf[pos + 1]
    need(tag & 0x1f != 0x1f, f"{what}: high tag numbers are not used")
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7f
        need(1 <= n <= 4 and pos + n <= len(buf), f"{what}: bad length")
        length = int.from_bytes(buf[pos:pos + n], "big")
        need(length >= 0x80 and buf[pos] != 0, f"{what}: length not in its shortest form")
        pos += n
    need(pos + length <= len(buf), f"{what}: truncated")
    return tag, pos, pos + length


def der_items(buf, start, end, what):
    """The TLVs between start and end: [(tag, contents start, end, whole start)]."""
    items, pos = [], start
    while pos < end:
        tag, s, e = der(buf[:end], pos, what)
        items.append((tag, s, e, pos))
        pos = e
    return items


def oid_text(b):
    first, rest, parts, v = b[0], b[1:], [], 0
    parts = [str(min(first // 40, 2)), str(first - 40 * min(first // 40, 2))]
    for byte in rest:
        v = (v << 7) | (byte & 0x7f)
        if not byte & 0x80:
            parts.append(str(v))
            v = 0
    return ".".join(parts)


def der_time(buf, tag, s, e, what):
    """UTCTime (YYMMDDHHMMSSZ, 50..99 = 19xx) or GeneralizedTime (YYYYMMDDHHMMSSZ): seconds."""
    text = buf[s:e].decode("ascii", "replace")
    if tag == 0x17:
        need(len(text) == 13 and text.endswith("Z") and text[:12].isdigit(), f"{what} is not a DER time")
        yy = int(text[:2])
        year, rest = (1900 + yy if yy >= 50 else 2000 + yy), text[2:12]
    else:
        need(tag == 0x18 and len(text) == 15 and text.endswith("Z") and text[:14].isdigit(),
             f"{what} is not a DER time")
        year, rest = int(text[:4]), text[4:14]
    month, day, hour, minute, second = (int(rest[i:i + 2]) for i in range(0, 10, 2))
    try:
        datetime.datetime(year, month, day, hour, minute, second)
    except ValueError:
        raise Bad(f"{what} is not a DER time") from None
    return calendar.timegm((year, month, day, hour, minute, second))


def parse_certificate(buf):
    """An X.509 certificate as format.md's readers parse one: DER, version 3, the signature
    algorithm inside equal to the one outside, no unique ids, each known extension at most once and
    no unknown one marked critical. Returns its parts (raw DER where compared byte for byte)."""
    tag, s, e = der(buf, 0, "certificate")
    need(tag == 0x30 and e == len(buf), "certificate: not one DER SEQUENCE")
    outer = der_items(buf, s, e, "certificate")
    need(len(outer) == 3 and [t for t, *_ in outer] == [0x30, 0x30, 0x03], "certificate: bad structure")
    (_, ts, te, tw), (_, as_, ae, _), (_, ss, se, _) = outer
    need(se > ss and buf[ss] == 0, "certificate: bad signature BIT STRING")
    items = der_items(buf, ts, te, "tbsCertificate")
    need(items and items[0][0] == 0xa0, "certificate: not version 3 (UnsupportedCertVersion)")
    version = der_items(buf, items[0][1], items[0][2], "version")
    need(len(version) == 1 and version[0][0] == 0x02 and buf[version[0][1]:version[0][2]] == b"\x02",
         "certificate: not version 3 (UnsupportedCertVersion)")
    need(len(items) >= 7, "certificate: tbsCertificate too short")
    _, serial, sig_alg, issuer, validity, subject, spki, *rest = items
    need(serial[0] == 0x02 and all(i[0] == 0x30 for i in (sig_alg, issuer, validity, subject, spki)),
         "certificate: bad tbsCertificate")
    need(buf[sig_alg[3]:sig_alg[2]] == buf[outer[1][3]:ae],
         "certificate: signature algorithms differ (SignatureAlgorithmMismatch)")
    times = der_items(buf, validity[1], validity[2], "validity")
    need(len(times) == 2, "certificate: bad validity")
    not_before, not_after = (der_time(buf, t, a, b, n) for (t, a, b, _), n in zip(times, ("notBefore", "notAfter")))
    extensions = {}
    for t, a, b, _ in rest:
        need(t == 0xa3 and not extensions, "certificate: unique ids or unknown fields are not accepted")
        (seq_t, seq_s, seq_e, _), = der_items(buf, a, b, "extensions")
        need(seq_t == 0x30, "certificate: bad extensions")
        for xt, xs, xe, _ in der_items(buf, seq_s, seq_e, "extension"):
            parts = der_items(buf, xs, xe, "extension")
            need(xt == 0x30 and parts and parts[0][0] == 0x06 and parts[-1][0] == 0x04 and len(parts) in (2, 3),
                 "certificate: bad extension")
            oid = oid_text(buf[parts[0][1]:parts[0][2]])
            need(len(parts) == 2 or parts[1][0] == 0x01, "certificate: bad extension")
            critical = len(parts) == 3 and buf[parts[1][1]:parts[1][2]] == b"\xff"
            if oid not in KNOWN_EXTENSIONS:
                need(not critical, f"certificate: unknown critical extension {oid} (UnsupportedCriticalExtension)")
                continue
            need(oid not in extensions, f"certificate: extension {oid} appears twice (ExtensionValueInvalid)")
            extensions[oid] = buf[parts[-1][1]:parts[-1][2]]
    return dict(tbs=buf[tw:te], sig_alg=buf[as_:ae], signature=buf[ss + 1:se], issuer=buf[issuer[3]:issuer[2]],
                subject=buf[subject[3]:subject[2]], subject_contents=(subject[1], subject[2]),
                not_before=not_before, not_after=not_after, extensions=extensions, der=buf)


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


def common_name(cert):
    """The subject's first common name (UTF8String or PrintableString)."""
    buf = cert["der"]
    for t, s, e, _ in der_items(buf, *cert["subject_contents"], "subject"):
        for at, a_s, a_e, _ in der_items(buf, s, e, "RDN"):
            (ot, os_, oe, _), (vt, vs, ve, _) = der_items(buf, a_s, a_e, "attribute")
            if oid_text(buf[os_:oe]) == OID_COMMON_NAME:
                need(vt in (0x0c, 0x13), "common name is not a UTF-8 or printable string")
                return buf[vs:ve].decode("utf-8")
    raise Bad("certificate has no common name")


def check_issued(cert, rec, ca):
    """The rules that need the pinned CA: issued directly by it, valid at the record's created_us
    (microseconds against whole seconds, both ends inclusive), not a CA, for client
    authentication, and naming the record's agent."""
    need(cert["issuer"] == ca["subject"], "certificate was not issued by the pinned agent CA (UnknownIssuer)")
    alg = der_items(cert["sig_alg"], 0, len(cert["sig_alg"]), "signatureAlgorithm")
    oid = oid_text(cert["sig_alg"][alg[0][1]:alg[0][2]])
    params = cert["sig_alg"][alg[1][3]:alg[1][2]] if len(alg) > 1 else None
    need(oid in CA_ALGORITHMS and params in CA_ALGORITHMS[oid][2] and len(alg) <= 2,
         f"certificate signed with an algorithm not accepted ({oid})")
    kind, digest, _ = CA_ALGORITHMS[oid]
    key = ca["key"]
    try:
        if kind == "ecdsa":
            need(isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, (ec.SECP256R1, ec.SECP384R1)),
                 "the CA's key does not fit the certificate's signature algorithm")
            key.verify(cert["signature"], cert["tbs"], ec.ECDSA(digest()))
        elif kind == "ed25519":
            need(isinstance(key, ed25519.Ed25519PublicKey), "the CA's key does not fit the certificate's signature algorithm")
            key.verify(cert["signature"], cert["tbs"])
        else:
            need(isinstance(key, rsa.RSAPublicKey) and 2048 <= key.key_size <= 8192,
                 "the CA's key does not fit the certificate's signature algorithm")
            key.verify(cert["signature"], cert["tbs"], padding.PKCS1v15(), digest())
    except InvalidSignature:
        raise Bad("certificate was not issued by the pinned agent CA (BadSignature)") from None
    need(cert["not_before"] <= cert["not_after"], "certificate validity is inverted (InvalidCertValidity)")
    need(cert["not_before"] * 1_000_000 <= rec["created_us"],
         f"certificate not valid yet at the record's created_us {rec['created_us']} (CertNotValidYet)")
    need(rec["created_us"] <= cert["not_after"] * 1_000_000,
         f"certificate expired before the record's created_us {rec['created_us']} (CertExpired)")
    bc = cert["extensions"].get("2.5.29.19")
    if bc is not None:
        parts = der_items(bc, 0, len(bc), "basicConstraints")
        need(len(parts) == 1 and parts[0][0] == 0x30, "bad basicConstraints")
        inner = der_items(bc, parts[0][1], parts[0][2], "basicConstraints")
        is_ca = bool(inner) and inner[0][0] == 0x01 and bc[inner[0][1]:inner[0][2]] == b"\xff"
        need(not is_ca, "a CA certificate is not an agent certificate (CaUsedAsEndEntity)")
    eku = cert["extensions"].get("2.5.29.37")
    if eku is not None:
        (t, s, e, _), = der_items(eku, 0, len(eku), "extKeyUsage")
        usages = [oid_text(eku[a:b]) for _, a, b, _ in der_items(eku, s, e, "extKeyUsage")]
        need(usages, "empty extended key usage (EmptyEkuExtension)")
        need(OID_CLIENT_AUTH in usages, "certificate not for client authentication (RequiredEkuNotFound)")
    name = common_name(cert)
    need(name == rec["agent"].decode(), f"certificate names agent {name!r}, the record {rec['agent'].decode()!r}")


def check_dek_signature(rec, ca):
    """A version-2 DEK record: its certificate parses, the record's signature verifies with its
    key, and (only with a pinned CA) the certificate is trusted. Returns the agent's key."""
    cert = parse_certificate(rec["cert"])
    try:
        key = x509.load_der_x509_certificate(rec["cert"]).public_key()
    except (ValueError, UnsupportedAlgorithm) as e:
        raise Bad(f"certificate does not parse: {e}") from None
    verify_signature(key, rec["scheme"], rec["sig"], DEK_RECORD_CONTEXT + rec["signed"])
    if ca is not None:
        check_issued(cert, rec, ca)
    return key


def chain_proof(chunks, rec):
    """The hash chain over the cores of the chunks present, in seq order, and every checkpoint's
    signature. Returns (problems, seq of the last checkpoint, chunks after it)."""
    head, problems, last, proven = bytes(32), [], None, 0
    for i, c in enumerate(chunks):
        head = hashlib.sha256(head + hashlib.sha256(c["core"]).digest()).digest()
        if not c["checkpoint"]:
            continue
        try:
            verify_signature(rec["key"], c["scheme"], c["sig"], CHECKPOINT_CONTEXT + head)
            last, proven = c["seq"], i + 1
        except Bad as e:
            problems.append(f"checkpoint at chunk {c['seq']}: {e}")
    return problems, last, len(chunks) - proven


# ---------------------------------------------------------------------------------------------
# The store

def segment_key(segment_id, created_us):
    d = utc(created_us)
    return f"v1/segments/{d.year:04}-{d.month:02}-{d.day:02}/{segment_id.hex()}.seg"


def dek_record_key(agent, dek_id):
    return f"v1/deks/{agent.hex()}/{dek_id.hex()}.dek"


def dek_key_is_well_formed(key):
    """v1/deks/<lowercase hex of a valid agent id>/<32 lowercase hex digits>.dek, nothing else."""
    parts = key.split("/")
    if len(parts) != 4 or not parts[3].endswith(".dek"):
        return False
    agent_hex, dek_hex = parts[2], parts[3][:-4]
    try:
        agent = bytes.fromhex(agent_hex)
        dek = bytes.fromhex(dek_hex)
        read_agent(Reader(struct.pack(">H", len(agent)) + agent))
    except (ValueError, Bad):
        return False
    return len(dek) == 16 and key == dek_record_key(agent, dek)


def read_limited(path, low, high, what):
    size = os.path.getsize(path)
    need(low <= size <= high, f"{what} of {size} bytes is not in {low}..={high}")
    with open(path, "rb") as f:
        return f.read()


def store_keys(store):
    """Every object key of the store, sorted. A key with '#' anywhere in it is a staging file
    (format.md "Store layout"), not an object."""
    keys = []
    for dirpath, dirnames, files in os.walk(store):
        dirnames.sort()
        keys += [os.path.relpath(os.path.join(dirpath, f), store).replace(os.sep, "/") for f in sorted(files)]
    return sorted(k for k in keys if "#" not in k)


def read_store(store, ca):
    """Every segment under STORE_DIR/v1/segments, every DEK record key's name, and the DEK records
    the chunks name (format.md "Object names"): (DEK records by (agent, id), chunks, counts,
    damaged objects). Other keys (not recordings: the format does not define them) are counted."""
    chunks, damaged, counts = [], [], {"segment": 0, "dek": 0, "other": 0}
    dek_keys = set()
    for key in store_keys(store):
        path = os.path.join(store, *key.split("/"))
        if key.startswith("v1/segments/"):
            counts["segment"] += 1
            try:
                need(key.endswith(".seg"), "not a segment's key (v1/segments/<date>/<id>.seg)")
                segment_id, created_us, found = parse_segment(read_limited(path, 68, MAX_SEGMENT, "segment object"))
                expected = segment_key(segment_id, created_us)
                need(key == expected, f"misplaced: this segment's key is {expected}")
                chunks.extend(found)
            except Bad as e:
                damaged.append(f"{key}: {e}")
        elif key.startswith("v1/deks/"):
            if dek_key_is_well_formed(key):
                dek_keys.add(key)
            else:
                damaged.append(f"{key}: not a DEK record's key (v1/deks/<agent id hex>/<DEK id hex>.dek)")
        else:
            counts["other"] += 1
    deks = {}
    for agent, dek_id in sorted({(c["agent"], c["dek_id"]) for c in chunks}):
        key = dek_record_key(agent, dek_id)
        if key not in dek_keys:
            continue  # each stream under it reports "no DEK record"
        counts["dek"] += 1
        try:
            rec = parse_dek_record(read_limited(os.path.join(store, *key.split("/")), 1, MAX_DEK_RECORD, "DEK record"))
            expected = dek_record_key(rec["agent"], rec["dek_id"])
            need(key == expected, f"misplaced: this DEK record's key is {expected}")
        except Bad as e:
            damaged.append(f"{key}: {e}")
            continue
        rec["key"] = None
        if rec["version"] == 2:
            try:
                rec["key"] = check_dek_signature(rec, ca)
                rec["fingerprint"] = hashlib.sha256(rec["cert"]).hexdigest()
            except Bad as e:
                rec["invalid"] = str(e)
        deks[(agent, dek_id)] = rec
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
    """Check 4: every chunk has the stream's kind; returns (problems, DEK ids without a record)."""
    problems, missing, kind = [], [], chunks[0]["kind"]
    for c in chunks:
        if c["kind"] != kind:
            problems.append(f"chunk {c['seq']} is of kind {c['kind']}, the stream's is {kind}")
        if (c["agent"], c["dek_id"]) not in deks and c["dek_id"].hex() not in missing:
            missing.append(c["dek_id"].hex())
    return list(dict.fromkeys(problems)), missing


def proof_of(chunks, deks):
    """Check 6: the DEK record's signature and certificate, one version, one DEK, the chain and
    every checkpoint. Returns (problems, proof kind: unsigned | signed | invalid, unproven, words)."""
    problems = []
    recs = [deks.get((c["agent"], c["dek_id"])) for c in chunks]
    if not any(c["version"] == 2 for c in chunks):
        # A signing agent seals only version 2: version-1 chunks under its signed DEK were
        # sealed by someone who unwrapped the DEK.
        for r in recs:
            if r is not None and r["version"] == 2:
                return [f"unsigned (version 1) chunks under DEK {r['dek_id'].hex()}, whose record its agent signed"], \
                    "invalid", 0, "signature invalid"
        return [], "unsigned", 0, "unsigned"
    if any(c["version"] != 2 for c in chunks):
        problems.append("the stream mixes chunk versions 1 and 2")
    if len({c["dek_id"] for c in chunks}) > 1:
        problems.append("the stream's chunks are sealed under more than one DEK")
    rec = recs[0]
    if problems or rec is None:
        return problems, "invalid", 0, "signature invalid"  # a missing record is reported as such
    if rec["version"] != 2:
        return [f"version-2 chunks under the unsigned (version 1) DEK record {rec['dek_id'].hex()}"], \
            "invalid", 0, "signature invalid"
    if rec.get("invalid"):
        return [f"DEK record {rec['dek_id'].hex()}: {rec['invalid']}"], "invalid", 0, "signature invalid"
    problems, last, unproven = chain_proof(chunks, rec)
    if problems:
        return problems, "invalid", 0, "signature invalid"
    words = f"signed by sha256:{rec['fingerprint']}"
    words += f" up to checkpoint {last}" if last is not None else ", no checkpoint"
    return [], "signed", unproven, words + f", {unproven} unproven"


def authentic_verdict(proof, complete, unproven, ca):
    """The verdict of a stream with nothing wrong in it."""
    if proof == "unsigned" and ca is not None:
        return "unsigned"
    if not complete:
        return "incomplete"
    if proof == "signed" and ca is not None and unproven > 0:
        return "unproven"
    return "ok"


# ---------------------------------------------------------------------------------------------
# Screen updates (format.md "Screen update" and "Compositing")

UPDATE_SUFFIX = ".ssu"
UPDATE_VERSIONS = (1, 2)  # the magic's last byte; any other version is malformed
MAX_SIDE = 16_384
MAX_RECTS = 4_096
MAX_COPIES = 4_096
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunks(data):
    """A PNG's chunks as (type, data), every CRC checked, ending with IEND and nothing after it."""
    need(data[:8] == PNG_SIGNATURE, "not a PNG (signature)")
    chunks, pos = [], 8
    while not chunks or chunks[-1][0] != b"IEND":
        need(pos + 12 <= len(data), "PNG truncated")
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        need(length < 1 << 31 and pos + 12 + length <= len(data), "PNG truncated")
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        need(zlib.crc32(kind + body) == crc, f"PNG chunk {kind!r}: CRC does not match")
        chunks.append((kind, body))
        pos += 12 + length
    need(pos == len(data), "bytes after the PNG's IEND")
    return chunks


def paeth(a, b, c):
    """PNG's Paeth predictor of a byte from its left (a), upper (b) and upper-left (c) neighbours."""
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def unfilter(raw, w, h):
    """The RGB bytes of `h` rows of `w` pixels, each row in `raw` a filter type byte then the
    filtered row (3 bytes a pixel: a byte's left neighbour is 3 bytes before it)."""
    stride = 3 * w
    out, prior = bytearray(), bytearray(stride)  # the row above the first is zeros
    for y in range(h):
        start = y * (stride + 1)
        kind, row = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        if kind == 1:  # Sub
            for i in range(3, stride):
                row[i] = (row[i] + row[i - 3]) & 0xff
        elif kind == 2:  # Up
            for i in range(stride):
                row[i] = (row[i] + prior[i]) & 0xff
        elif kind == 3:  # Average
            for i in range(stride):
                left = row[i - 3] if i >= 3 else 0
                row[i] = (row[i] + (left + prior[i]) // 2) & 0xff
        elif kind == 4:  # Paeth
            for i in range(stride):
                left, upper_left = (row[i - 3], prior[i - 3]) if i >= 3 else (0, 0)
                row[i] = (row[i] + paeth(left, prior[i], upper_left)) & 0xff
        else:
            need(kind == 0, f"PNG row {y} has filter type {kind}")
        out += row
        prior = row
    return bytes(out)


def decode_png(data, w, h):
    """The RGB bytes of an 8-bit truecolour, non-interlaced PNG of exactly `w` x `h` pixels; any
    other PNG, and anything that is not a well-formed PNG, is refused."""
    chunks = png_chunks(data)
    kinds = [kind for kind, _ in chunks]
    need(kinds[0] == b"IHDR" and len(chunks[0][1]) == 13, "PNG does not start with its IHDR")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    need(depth == 8 and colour == 2, f"PNG is bit depth {depth}, colour type {colour}: not 8-bit truecolour")
    need(compression == 0 and filtering == 0, "PNG compression or filter method is not 0")
    need(interlace == 0, "PNG is interlaced")
    need((width, height) == (w, h), f"PNG is {width}x{height}, its rectangle {w}x{h}")
    # Critical chunks (an upper-case first letter): IHDR first, IEND last, the IDATs one run, an
    # optional PLTE (a suggested palette in a truecolour PNG) before them. Ancillary ones are skipped.
    critical = [k for k in kinds if k[0] & 0x20 == 0]
    need(all(k in (b"IHDR", b"PLTE", b"IDAT", b"IEND") for k in critical), "PNG has an unknown critical chunk")
    need(critical.count(b"IHDR") == 1 and critical.count(b"IEND") == 1 and critical.count(b"PLTE") <= 1,
         "PNG repeats IHDR, PLTE or IEND")
    idats = [i for i, k in enumerate(kinds) if k == b"IDAT"]
    need(idats and idats == list(range(idats[0], idats[-1] + 1)), "PNG's IDAT chunks are missing or not consecutive")
    need(b"PLTE" not in kinds[idats[0]:], "PNG's PLTE follows its IDAT")
    # Exactly h rows of a filter byte and 3w bytes, in one complete zlib stream.
    size = h * (1 + 3 * w)
    inflate = zlib.decompressobj()
    try:
        raw = inflate.decompress(b"".join(chunks[i][1] for i in idats), size + 1)
        if len(raw) == size and not inflate.eof:
            raw += inflate.decompress(inflate.unconsumed_tail, 1)  # only the zlib checksum may remain
    except zlib.error as e:
        raise Bad(f"PNG pixel data does not inflate: {e}") from None
    need(len(raw) == size, f"PNG pixel data is not {h} rows of {w} pixels")
    need(inflate.eof and not inflate.unused_data, "PNG pixel data is not one complete zlib stream")
    return unfilter(raw, w, h)


def encode_png(width, height, rgb):
    """`rgb` as an 8-bit RGB PNG, not interlaced, every row with filter type 0."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    stride = 3 * width
    raw = b"".join(b"\0" + rgb[y * stride:(y + 1) * stride] for y in range(height))
    return (PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def parse_update(image):
    """A screen update's image bytes (version 1 or 2): (keyframe, width, height, [(sx, sy, w, h,
    dx, dy)], [(x, y, w, h, RGB bytes)]), the copies (none in version 1) and every rectangle's
    PNG decoded. Raises Bad for anything format.md does not allow."""
    r = Reader(image)
    need(r.take(3) == b"SSU", "screen update: bad magic")
    version = r.u("B")
    need(version in UPDATE_VERSIONS, f"screen update version {version} is unknown")
    flags = r.u("B")
    need(flags & ~1 == 0, f"screen update flags 0x{flags:02x} not allowed")
    keyframe = bool(flags & 1)
    width, height = r.u("H"), r.u("H")
    need(1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE, f"screen {width}x{height} is not in 1..={MAX_SIDE}")
    copies = []
    if version == 2:
        n = r.u("H")
        need(n <= MAX_COPIES, f"copy count {n} is not in 0..={MAX_COPIES}")
        need(not keyframe or n == 0, f"a keyframe has {n} copies")
        for i in range(n):
            sx, sy, w, h, dx, dy = (r.u("H") for _ in range(6))
            need(w >= 1 and h >= 1 and sx + w <= width and sy + h <= height and dx + w <= width and dy + h <= height,
                 f"copy {i} ({sx},{sy} {w}x{h} to {dx},{dy}) is empty or not inside the {width}x{height} screen")
            copies.append((sx, sy, w, h, dx, dy))
    count = r.u("H")
    least = 0 if copies else 1  # version 1 has no copies: 1..=4,096 rectangles
    need(least <= count <= MAX_RECTS, f"rectangle count {count} is not in {least}..={MAX_RECTS}")
    rects = []
    for i in range(count):
        x, y, w, h, png_len = r.u("H"), r.u("H"), r.u("H"), r.u("H"), r.u("I")
        need(w >= 1 and h >= 1 and x + w <= width and y + h <= height,
             f"rectangle {i} ({x},{y} {w}x{h}) is empty or not inside the {width}x{height} screen")
        rects.append((x, y, w, h, r.take(png_len)))
    need(r.pos == len(image), "bytes after the last rectangle")
    need(not keyframe or (count == 1 and rects[0][:4] == (0, 0, width, height)),
         "a keyframe is not one rectangle covering the whole screen")
    decoded = []
    for i, (x, y, w, h, png) in enumerate(rects):
        try:
            decoded.append((x, y, w, h, decode_png(png, w, h)))
        except Bad as e:
            raise Bad(f"rectangle {i}: {e}") from None
    return keyframe, width, height, copies, decoded


class Screen:
    """A frames stream's screen: none before the first update, then what the updates made."""

    def __init__(self):
        self.width = self.height = 0
        self.rgb = None

    def apply(self, image):
        """Composites one update; one that does not parse raises Bad and changes nothing."""
        keyframe, width, height, copies, rects = parse_update(image)
        if keyframe or self.rgb is None or (self.width, self.height) != (width, height):
            self.width, self.height, self.rgb = width, height, bytearray(3 * width * height)  # black
        for sx, sy, w, h, dx, dy in copies:  # in order, each through a buffer: overlap does not matter
            rows = [bytes(self.rgb[3 * ((sy + j) * width + sx):3 * ((sy + j) * width + sx + w)]) for j in range(h)]
            for j, row in enumerate(rows):
                at = 3 * ((dy + j) * width + dx)
                self.rgb[at:at + 3 * w] = row
        for x, y, w, h, rgb in rects:  # in the order given: a later one paints over an earlier
            for row in range(h):
                at = 3 * ((y + row) * width + x)
                self.rgb[at:at + 3 * w] = rgb[3 * w * row:3 * w * (row + 1)]

    def png(self):
        return encode_png(self.width, self.height, bytes(self.rgb))


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


def nesting_depth(text):
    """The deepest nesting of objects and arrays in `text`, brackets inside strings aside."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def check_events(plain):
    """A keystroke or activity batch: lines ending in LF, each a UTF-8 JSON text (RFC 8259) whose
    value is an object nested at most 128 levels deep; any escape and any number are accepted."""
    need(not plain or plain.endswith(b"\n"), "event batch does not end with a line feed")
    events = 0
    for line in plain.split(b"\n")[:-1]:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise Bad("an event line is not UTF-8") from None
        need(nesting_depth(text) <= MAX_EVENT_DEPTH, f"an event line is nested deeper than {MAX_EVENT_DEPTH} levels")
        try:
            value = json.loads(text, parse_int=lambda _: 0, parse_float=lambda _: 0, parse_constant=reject_constant)
        except ValueError:
            raise Bad("an event line is not JSON") from None
        need(isinstance(value, dict), "an event line is not a JSON object")
        events += 1
    return events


def check_gap(seq, plain, hole):
    """A gap record's 40 bytes: first_seq, last_seq, first and last capture time, count. Its range
    must be exactly the missing numbers. Returns the gap as printed."""
    need(len(plain) == 40, f"gap record {seq} is {len(plain)} bytes, not 40")
    first, last, t0, t1, count = struct.unpack(">QQqqQ", plain)
    need(hole == (first, last) and last + 1 == seq and count == last - first + 1,
         f"gap record {seq} declares {span(first, last)} ({count}) but {span(*hole) if hole else 'nothing'} is missing")
    when = f"{utc(t0):%Y-%m-%dT%H:%M:%SZ} to {utc(t1):%Y-%m-%dT%H:%M:%SZ}"
    return f"gap {span(first, last)} ({count} dropped, captured {when})"


def open_stream(chunks, holes, deks, private, kek_id, staging):
    """Check 5: opens every chunk, stages frames (a screen update as the screen it makes) and
    keystroke or activity events under `staging`. Returns (problems, DEKs under another KEK, gaps,
    malformed chunk numbers, files staged)."""
    problems, no_key, gaps, malformed, files, keys, events = [], [], [], [], [], {}, None
    screen = Screen()  # gap records and missing chunks do not reset it

    def stage(name, data):
        os.makedirs(staging, exist_ok=True)
        with open(os.path.join(staging, name), "wb") as fh:
            fh.write(data)
        files.append(name)

    for c in chunks:
        seq, rec = c["seq"], deks.get((c["agent"], c["dek_id"]))
        if rec is None:
            continue  # reported as a missing DEK record
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
        if c["gap"]:
            try:
                gaps.append(check_gap(seq, plain, holes.get(seq)))
            except Bad as e:
                problems.append(f"chunk {seq}: {e}")
            continue
        try:
            if c["kind"] == 1:
                frame = frame_file(seq, plain)
                if frame and frame[0].endswith(UPDATE_SUFFIX):
                    screen.apply(frame[1])  # a malformed update leaves the screen as it was
                    frame = frame[0][:-len(UPDATE_SUFFIX)] + ".png", screen.png()
                if frame:
                    stage(*frame)
            elif check_events(plain):
                events = (events or b"") + plain
        except Bad:
            malformed.append(seq)
    if events is not None:
        stage(EVENT_FILES[chunks[0]["kind"]], events)
    return list(dict.fromkeys(problems)), list(dict.fromkeys(no_key)), gaps, malformed, files


def place(staging, files, final):
    """Move the staged files to `final` (never over a file already there)."""
    placed = []
    for f in files:
        dest = os.path.join(final, f)
        os.makedirs(final, exist_ok=True)
        if os.path.exists(dest):
            raise UsageError(f"{dest} exists: export into a new directory")
        os.rename(os.path.join(staging, f), dest)
        placed.append(dest)
    if os.path.isdir(staging):
        shutil.rmtree(staging)
    return placed


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
    """The pinned agent CA: trusted as given (its subject and key count); refused with name constraints."""
    try:
        with open(path, "rb") as f:
            loaded = x509.load_pem_x509_certificate(f.read())
        der_bytes = loaded.public_bytes(serialization.Encoding.DER)
        tag, s, e = der(der_bytes, 0, "CA certificate")
        tbs = der_items(der_bytes, *der_items(der_bytes, s, e, "CA certificate")[0][1:3], "CA tbsCertificate")
        fields = tbs[1:] if tbs[0][0] == 0xa0 else tbs
        subject = der_bytes[fields[4][3]:fields[4][2]]
        constrained = any(ext.oid.dotted_string == "2.5.29.30" for ext in loaded.extensions)
        key = loaded.public_key()
    except (OSError, ValueError, Bad, IndexError) as e:
        raise UsageError(f"cannot load the agent CA certificate {path}: {e}") from None
    if constrained:
        raise UsageError(f"{path}: an agent CA certificate with name constraints cannot be pinned")
    return {"subject": subject, "key": key}


def run(store, ca, private=None, kek_id=None, out=None, allow_incomplete=False, json_path=None):
    """Checks (and with a private key decrypts) every stream; prints a line each. Returns the exit status."""
    if not os.path.isdir(store):
        raise UsageError(f"{store} is not a directory")
    deks, chunks, counts, damaged = read_store(store, ca)
    for line in damaged:
        print(f"damaged object {line}")
    streams = group_streams(chunks)
    reported = []
    for (agent, session, stream), by_seq in sorted(streams.items()):
        present = [by_seq[s][0] for s in sorted(by_seq)]
        problems, holes = check_sequence(by_seq)
        kind_problems, missing = check_membership(present, deks)
        problems += kind_problems
        signature_problems, proof, unproven, words = proof_of(present, deks)
        no_key, malformed, files, staging = [], [], [], None
        if private is not None:
            staging = os.path.join(out, f".staging-{uuid.UUID(bytes=session)}-{stream}")
            opened, no_key, gaps, malformed, files = open_stream(present, holes, deks, private, kek_id, staging)
            problems += opened
        else:
            gaps = [f"gap {span(*h)} ({h[1] - h[0] + 1} missing, range not read without a key)" for h in holes.values()]
        problems += signature_problems
        complete = present[-1]["final"]
        if problems:
            status, verdict = "tampered: " + ", ".join(problems), "tampered"
        elif missing:
            status, verdict = "no DEK record: " + ", ".join(missing), "no_dek_record"
        elif no_key:
            status, verdict = "not opened, no key: " + ", ".join(no_key), "no_key"
        elif malformed:
            status, verdict = "malformed: chunks " + ", ".join(map(str, malformed)), "malformed"
        else:
            status = ("complete" if complete else "incomplete") + "".join(", " + g for g in gaps)
            verdict = authentic_verdict(proof, complete, unproven, ca)
        if proof == "signed" and ca is None:
            words += " (signature valid, CA not checked)"
        placed = []
        if staging is not None:
            final = os.path.join(out, *([] if verdict == "ok" else [QUARANTINE]), str(uuid.UUID(bytes=session)),
                                 str(stream))
            placed = [os.path.relpath(p, out).replace(os.sep, "/") for p in place(staging, files, final)]
        print(f"{agent.decode()} {uuid.UUID(bytes=session)} stream {stream}: {len(by_seq)} chunks, {status}; {words}; "
              f"verdict {verdict}")
        times = [c["capture_us"] for c in present]
        reported.append({
            "agent": agent.decode(), "session": str(uuid.UUID(bytes=session)), "stream": stream,
            "kind": KINDS[present[0]["kind"]], "chunks": len(by_seq),
            "first_capture_us": min(times), "last_capture_us": max(times), "verdict": verdict, "proof": proof,
            "problems": problems, "malformed_chunks": malformed, "files": placed,
        })
    verdicts = [s["verdict"] for s in reported]
    outcome = "tampered" if damaged else min(verdicts, key=VERDICTS.index, default="ok")
    counted = [v for v in verdicts if not (allow_incomplete and v in WAIVABLE)]
    code = EXIT["tampered"] if damaged else EXIT[min(counted, key=VERDICTS.index, default="ok")]
    print(f"store: {counts['segment']} segment objects, {counts['dek']} DEK records read, {len(streams)} streams, "
          f"{len(damaged)} damaged objects, {counts['other']} other objects not read; outcome {outcome}")
    if json_path is not None:
        with open(json_path, "w") as f:
            json.dump({"outcome": outcome, "damaged_objects": damaged, "streams": reported}, f, indent=2)
    return code


def main(argv):
    parser = argparse.ArgumentParser(
        usage="%(prog)s [--agent-ca CA.pem] [--allow-incomplete] [--json FILE] "
              "STORE_DIR PRIVATE_KEY.pem PASSPHRASE_FILE OUT_DIR\n"
              "       %(prog)s --verify STORE_DIR [--agent-ca CA.pem] [--allow-incomplete] [--json FILE]",
        description="Decrypts or verifies a sealstream store, following docs/format.md.")
    parser.add_argument("--verify", metavar="STORE_DIR", help="check without a private key; decrypt nothing")
    parser.add_argument("--agent-ca", metavar="CA.pem",
                        help="the agent CA certificate that must have issued the agents' certificates")
    parser.add_argument("--allow-incomplete", action="store_true",
                        help="exit 0 for incomplete streams and unproven tails (never for unsigned streams)")
    parser.add_argument("--json", metavar="FILE", help="also write the verdicts as JSON")
    parser.add_argument("args", nargs="*", metavar="STORE_DIR PRIVATE_KEY.pem PASSPHRASE_FILE OUT_DIR")
    a = parser.parse_args(argv)
    if (a.verify is None) != (len(a.args) == 4) or (a.verify is not None and a.args):
        parser.error("give either STORE_DIR PRIVATE_KEY.pem PASSPHRASE_FILE OUT_DIR, or --verify STORE_DIR")
    try:
        ca = load_ca(a.agent_ca) if a.agent_ca else None
        if a.verify is not None:
            return run(a.verify, ca, allow_incomplete=a.allow_incomplete, json_path=a.json)
        store, key_file, pass_file, out = a.args
        private, kek_id = load_private_key(key_file, pass_file)
        try:
            os.makedirs(out, exist_ok=True)
        except OSError as e:
            raise UsageError(f"cannot create {out}: {e}") from None
        return run(store, ca, private, kek_id, out, a.allow_incomplete, a.json)
    except OSError as e:
        print(f"reference_decrypt.py: I/O error: {e}", file=sys.stderr)
        return 1
    except UsageError as e:
        print(f"reference_decrypt.py: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
