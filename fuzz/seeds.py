#!/usr/bin/env python3
"""Write the fuzz targets' seed corpus (fuzz/corpus/<target>/) from the published test vectors
(tests/vectors/vectors.json), the example configs and keys made by the openssl CLI. Run from
the repository root; the files it writes are committed, so CI and every fuzz run start from them.
"""
import hashlib, json, os, struct, subprocess, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
V = json.load(open(os.path.join(ROOT, "tests/vectors/vectors.json")))


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def put(target, name, data):
    d = os.path.join(ROOT, "fuzz/corpus", target)
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, name), "wb").write(data)


chunks = [bytes.fromhex(c["sealed"]) for c in V["chunks"]]
plaintexts = [bytes.fromhex(c["plaintext"]) for c in V["chunks"]]
dek_record = bytes.fromhex(V["dek_record"])

# chunk, dek_record, payload
for i, c in enumerate(chunks):
    put("chunk", f"vector-{i}", c)
put("dek_record", "vector", dek_record)
for i, p in enumerate(plaintexts):
    put("payload", f"vector-{i}", p)
put("payload", "gap", struct.pack(">QQqqQ", 10, 19, 1_700_000_000_000_000, 1_700_000_009_000_000, 10))

# uplink: a byte that says where the stream splits, then messages; and responses.
def msg(kind, body):
    return struct.pack(">BI", kind, len(body)) + body

stream = msg(1, dek_record) + b"".join(msg(2, c) for c in chunks)
put("uplink", "dek-and-chunks", bytes([40]) + stream)
put("uplink", "one-chunk", bytes([0]) + msg(2, chunks[0]))
reason = b"retry later: index busy"
put("uplink", "responses", struct.pack(">BBQH", 2, 0, 7, 0) + struct.pack(">BBQH", 2, 11, 8, len(reason)) + reason)

# segment: header | chunks | SHA-256(header | SHA-256(chunk)...)
def segment(cs):
    header = b"SSSG" + bytes([1, 0, 0, 0]) + bytes(range(16)) + struct.pack(">qI", 1_700_000_000_000_000, len(cs))
    h = hashlib.sha256(header)
    for c in cs:
        h.update(hashlib.sha256(c).digest())
    return header + b"".join(cs) + h.digest()

put("segment", "all-vectors", segment(chunks))
put("segment", "one", segment(chunks[:1]))
put("segment", "empty", segment([]))

# spool: len u32 | crc32c u32 | kind u8 | body; and the ack ledger's 32-byte records.
def record(kind, body):
    return struct.pack(">II", len(body) + 1, crc32c(bytes([kind]) + body)) + bytes([kind]) + body

put("spool", "dek-and-chunks", record(1, dek_record) + b"".join(record(2, c) for c in chunks))
put("spool", "torn-tail", record(1, dek_record) + record(2, chunks[0])[:-5])
c0 = chunks[0]
key = c0[24:40] + c0[40:44] + c0[44:52]  # session, stream, seq as the chunk header holds them
put("spool", "ledger", struct.pack(">I", crc32c(key)) + key)

# keys: the vectors' own, and every form openssl writes.
vec = os.path.join(ROOT, "tests/vectors")
put("private_key", "pkcs8-pbes2", open(os.path.join(vec, "kek.pem"), "rb").read())
put("public_key", "spki", open(os.path.join(vec, "kek.crt"), "rb").read())
with tempfile.TemporaryDirectory() as t:
    def ossl(*args):
        subprocess.run(["openssl", *args], check=True, cwd=t, capture_output=True)
    ossl("genrsa", "-out", "plain.pem", "2048")
    ossl("pkcs8", "-topk8", "-nocrypt", "-in", "plain.pem", "-out", "pkcs8.pem")
    ossl("rsa", "-in", "plain.pem", "-traditional", "-out", "pkcs1.pem")
    ossl("rsa", "-in", "plain.pem", "-traditional", "-aes256", "-passout", "pass:fuzz passphrase", "-out", "trad-aes.pem")
    ossl("pkcs8", "-topk8", "-v2", "aes-256-cbc", "-passout", "pass:fuzz passphrase", "-in", "plain.pem", "-out", "pbes2.pem")
    ossl("rsa", "-in", "plain.pem", "-pubout", "-out", "spki.pem")
    ossl("rsa", "-in", "plain.pem", "-RSAPublicKey_out", "-out", "pkcs1pub.pem")
    ossl("req", "-new", "-x509", "-key", "plain.pem", "-subj", "/CN=fuzz", "-days", "1", "-out", "cert.pem")
    for name in ["pkcs8", "pkcs1", "trad-aes", "pbes2"]:
        put("private_key", name, open(os.path.join(t, name + ".pem"), "rb").read())
    for name in ["spki", "pkcs1pub", "cert"]:
        put("public_key", name, open(os.path.join(t, name + ".pem"), "rb").read())

# config: the shipped examples.
for name in ["serve.toml", "agent.toml"]:
    put("config", name, open(os.path.join(ROOT, "config", name), "rb").read())
