// Proof of origin and order for one stream of a recording (docs/format.md "Agent signatures" and
// "Verifying a stream"), checked in the page as `sealstream verify --agent-ca` checks it
// (src/inspect.rs `check_stream` and `prove`, src/crypto/sign.rs): the agent CA certificate the
// reviewer pins (AgentCa), the agent certificate a version-2 DEK record carries (X.509 read with
// der.js, under the rules rustls-webpki applies), the record's signature, the hash chain over the
// stream's chunks in seq order and each checkpoint's signature, numbering from 0 without holes,
// and the final chunk. StreamProof is fed chunks one at a time, in any order, as session.js
// fetches (and opens) them, and judges what it holds as the stream stored; proveStream does the
// same in one call. Capture times come from the chunk headers (authenticated by the GCM tag and
// the signed chain), never from the server's index. WebCrypto only: SHA-256, Ed25519, ECDSA,
// and RSA PKCS#1 v1.5 for a CA's signature. Nothing here is secret; only hashes and small
// fields of each chunk are kept, never its bytes.

import { DerError, DerReader, TAG, oidToString, pemBlocks } from './der.js';
import { DEK_SIGNATURE_CONTEXT, parseDekRecord } from './dek.js';
import { TAG_LEN, TamperedError, parseChunk } from './chunk.js';
import { parseGap } from './payload.js';
import { concat, equalBytes, fromUtf8, toHex, utf8 } from './hex.js';

const subtle = globalThis.crypto.subtle;

/** What a DEK record's signature covers before the record's bytes (sign.rs DEK_CONTEXT). */
export const DEK_CONTEXT = DEK_SIGNATURE_CONTEXT;
/** What a checkpoint's signature covers before the chain head (sign.rs CHECKPOINT_CONTEXT). */
export const CHECKPOINT_CONTEXT = utf8('sealstream/2 checkpoint');
/** The chain head before a stream's first chunk. */
export const CHAIN_START = new Uint8Array(32);
/** Agent signature schemes (TLS SignatureScheme code points). */
export const SCHEME = { ECDSA_P256_SHA256: 0x0403, ECDSA_P384_SHA384: 0x0503, ED25519: 0x0807 };

const OID = {
  commonName: '2.5.4.3',
  clientAuth: '1.3.6.1.5.5.7.3.2',
  ecPublicKey: '1.2.840.10045.2.1',
  p256: '1.2.840.10045.3.1.7',
  p384: '1.3.132.0.34',
  ed25519: '1.3.101.112',
  rsaEncryption: '1.2.840.113549.1.1.1',
};
/** The extensions rustls-webpki reads; any other one marked critical makes it refuse the certificate. */
const EXTENSIONS = {
  '2.5.29.15': 'keyUsage', '2.5.29.17': 'subjectAltName', '2.5.29.19': 'basicConstraints',
  '2.5.29.30': 'nameConstraints', '2.5.29.31': 'crlDistributionPoints', '2.5.29.37': 'extKeyUsage',
  '1.3.6.1.4.1.11129.2.4.2': 'sctList',
};
/** A CA's signature over a certificate: the algorithms webpki::ALL_VERIFICATION_ALGS has (RSA-PSS aside). */
const CERT_ALGORITHMS = {
  '1.2.840.10045.4.3.2': { kind: 'ecdsa', hash: 'SHA-256', params: ['none'] },
  '1.2.840.10045.4.3.3': { kind: 'ecdsa', hash: 'SHA-384', params: ['none'] },
  '1.3.101.112': { kind: 'ed25519', params: ['none'] },
  '1.2.840.113549.1.1.11': { kind: 'rsa', hash: 'SHA-256', params: ['none', 'null'] },
  '1.2.840.113549.1.1.12': { kind: 'rsa', hash: 'SHA-384', params: ['none', 'null'] },
  '1.2.840.113549.1.1.13': { kind: 'rsa', hash: 'SHA-512', params: ['none', 'null'] },
};
/** An agent's signature: the scheme names the key it needs (sign.rs `algorithm`). */
const SCHEME_ALGORITHMS = {
  [SCHEME.ECDSA_P256_SHA256]: { kind: 'ecdsa', hash: 'SHA-256', key: 'P-256' },
  [SCHEME.ECDSA_P384_SHA384]: { kind: 'ecdsa', hash: 'SHA-384', key: 'P-384' },
  [SCHEME.ED25519]: { kind: 'ed25519', key: 'Ed25519' },
};

/** Why a signature or certificate was not accepted: sign.rs `ProofError`, with its words. */
export class ProofError extends Error {
  /** `kind`: unknown_scheme | bad_certificate | bad_signature | untrusted | wrong_agent. */
  constructor(kind, message, why = '') {
    super(message);
    this.name = 'ProofError';
    this.kind = kind;
    this.why = why;
  }
}

const unknownScheme = (s) => new ProofError('unknown_scheme', `unknown signature scheme 0x${s.toString(16).padStart(4, '0')}`);
const badCertificate = (why) => new ProofError('bad_certificate', `the certificate does not parse: ${why}`, why);
const badSignature = () => new ProofError('bad_signature', 'the signature does not verify');
const untrusted = (why) =>
  new ProofError('untrusted', `the certificate was not issued by the pinned agent CA, or was not valid then: ${why}`, why);

// ---- hashes and the chain ----

export async function sha256(bytes) {
  return new Uint8Array(await subtle.digest('SHA-256', bytes));
}

/** `sha256:` + hex of SHA-256(der), as `agents list` and `verify` show a certificate. */
export async function fingerprint(der) {
  return `sha256:${toHex(await sha256(der))}`;
}

/** The next chain head for a core whose SHA-256 is known: SHA-256(prev || coreDigest). */
export const chainLink = (prev, coreDigest) => sha256(concat(prev, coreDigest));

/** The next chain head: SHA-256(prev || SHA-256(core)). */
export async function chainNext(prev, core) {
  return chainLink(prev, await sha256(core));
}

/** The bytes a checkpoint's signature covers. */
export const checkpointMessage = (head) => concat(CHECKPOINT_CONTEXT, head);

// ---- X.509, as rustls-webpki reads it ----

/**
 * An X.509 certificate as rustls-webpki parses one: version 3 (a trust anchor may be version 1),
 * the signature algorithm inside equal to the one outside, no unique ids, each known extension at
 * most once, and (unless `anchor`) no unknown extension marked critical. Returns {der, tbs,
 * sigAlg (AlgorithmIdentifier contents), signature, version, serial, issuer, subject (Name DER),
 * validity (reader input), spki (DER), ext: {name → contents}}. Throws DerError naming the rule.
 */
export function parseCertificate(der, { anchor = false } = {}) {
  const outer = new DerReader(der, 0, der.length, 'certificate');
  const cert = outer.sequence('Certificate');
  outer.finish();
  const tbsTlv = cert.next(TAG.SEQUENCE, 'tbsCertificate');
  const sigAlg = cert.next(TAG.SEQUENCE, 'signatureAlgorithm').value;
  const signature = cert.bitString('signatureValue');
  cert.finish();
  const tbs = new DerReader(der, tbsTlv.valueStart, tbsTlv.end, 'tbsCertificate');
  let version = 1;
  if (tbs.peekTag() === 0xa0) {
    const v = tbs.sequence('version', 0xa0);
    version = v.smallInteger('version') + 1;
    v.finish();
  }
  if (version !== 3 && !(anchor && version === 1)) {
    throw new DerError(`certificate: version ${version} (UnsupportedCertVersion: only version 3 is accepted)`);
  }
  const serial = tbs.next(TAG.INTEGER, 'serialNumber').value;
  if (!equalBytes(tbs.next(TAG.SEQUENCE, 'signature').value, sigAlg)) {
    throw new DerError('certificate: the signature algorithm inside differs from the one outside (SignatureAlgorithmMismatch)');
  }
  const issuer = tbs.next(TAG.SEQUENCE, 'issuer').der;
  const validity = tbs.next(TAG.SEQUENCE, 'validity').value;
  const subject = tbs.next(TAG.SEQUENCE, 'subject').der;
  const spki = tbs.next(TAG.SEQUENCE, 'subjectPublicKeyInfo').der;
  const ext = {};
  if (version === 3 && !tbs.done) {
    const wrapper = tbs.sequence('extensions', 0xa3);
    const list = wrapper.sequence('extensions');
    wrapper.finish();
    while (!list.done) readExtension(list.sequence('extension'), ext, anchor);
  }
  tbs.finish(); // issuerUniqueID, subjectUniqueID or anything else: refused, as webpki does
  return { der, tbs: tbsTlv.der, sigAlg, signature, version, serial, issuer, subject, validity, spki, ext };
}

function readExtension(r, ext, anchor) {
  const id = r.oid('extnID');
  let critical = false;
  if (r.peekTag() === 0x01) {
    const b = r.next(0x01, 'critical').value;
    if (b.length !== 1 || (b[0] !== 0 && b[0] !== 0xff)) throw new DerError('certificate: bad BOOLEAN in an extension');
    critical = b[0] === 0xff;
  }
  const value = r.octetString('extnValue');
  r.finish();
  const name = EXTENSIONS[id];
  if (!name) {
    if (critical && !anchor) throw new DerError(`certificate: unsupported critical extension ${id} (UnsupportedCriticalExtension)`);
    return;
  }
  if (ext[name]) throw new DerError(`certificate: extension ${id} appears twice (ExtensionValueInvalid)`);
  if (name === 'keyUsage') {
    ext[name] = value;
    return;
  }
  const inner = new DerReader(value, 0, value.length, name);
  ext[name] = inner.next(name === 'sctList' ? TAG.OCTET_STRING : TAG.SEQUENCE, name).value;
  inner.finish();
}

/** UTCTime or GeneralizedTime (webpki's forms: seconds, `Z`) as seconds since the epoch. */
function readTime(r, field) {
  const utc = r.peekTag() === 0x17;
  const text = String.fromCharCode(...r.next(utc ? 0x17 : 0x18, field).value);
  const m = (utc ? /^(\d{2})(\d{10})Z$/ : /^(\d{4})(\d{10})Z$/).exec(text);
  if (!m) throw new DerError(`${field} is not a DER time (BadDerTime)`);
  let year = Number(m[1]);
  if (utc) year += year >= 50 ? 1900 : 2000;
  const [month, day, hour, minute, second] = m[2].match(/\d\d/g).map(Number);
  const days = year >= 1970 && month >= 1 && month <= 12 ? new Date(Date.UTC(year, month, 0)).getUTCDate() : 0;
  if (day < 1 || day > days || hour > 23 || minute > 59 || second > 59) throw new DerError(`${field} is not a DER time (BadDerTime)`);
  return Date.UTC(year, month - 1, day, hour, minute, second) / 1000;
}

/** ISO text of seconds since the epoch, for messages. */
const iso = (s) => new Date(s * 1000).toISOString().replace('.000Z', 'Z');

/** The SubjectPublicKeyInfo's key type: {type: Ed25519 | P-256 | P-384 | RSA | unsupported, size, bits}. */
function keyType(spki) {
  const r = new DerReader(spki, 0, spki.length, 'subjectPublicKeyInfo');
  const s = r.sequence('subjectPublicKeyInfo');
  const alg = s.sequence('algorithm');
  const oid = alg.oid('algorithm');
  let param = 'none';
  if (!alg.done) {
    const p = alg.next();
    param = p.tag === TAG.OID ? oidToString(p.value) : p.tag === TAG.NULL && p.value.length === 0 ? 'null' : 'other';
  }
  alg.finish();
  const key = s.bitString('subjectPublicKey');
  s.finish();
  if (oid === OID.ed25519 && param === 'none') return { type: 'Ed25519', importAs: { name: 'Ed25519' } };
  if (oid === OID.ecPublicKey && param === OID.p256) return { type: 'P-256', size: 32, importAs: { name: 'ECDSA', namedCurve: 'P-256' } };
  if (oid === OID.ecPublicKey && param === OID.p384) return { type: 'P-384', size: 48, importAs: { name: 'ECDSA', namedCurve: 'P-384' } };
  if (oid === OID.rsaEncryption && param === 'null') {
    const k = new DerReader(key, 0, key.length, 'RSAPublicKey').sequence('RSAPublicKey');
    const n = k.integer('modulus');
    const m = n[0] === 0 ? n.subarray(1) : n;
    return { type: 'RSA', bits: m.length ? (m.length - 1) * 8 + (32 - Math.clz32(m[0])) : 0 };
  }
  return { type: 'unsupported' };
}

/** A DER `Ecdsa-Sig-Value` as WebCrypto's r || s (each `size` bytes), or null if it is not one. */
export function ecdsaSignatureToRaw(der, size) {
  try {
    const r = new DerReader(der, 0, der.length, 'ECDSA signature');
    const seq = r.sequence('Ecdsa-Sig-Value');
    r.finish();
    const out = new Uint8Array(2 * size);
    for (let i = 0; i < 2; i++) {
      let v = seq.integer(i ? 's' : 'r');
      if (v[0] & 0x80) return null;
      if (v.length > 1 && v[0] === 0) v = v.subarray(1);
      if (v.length > size) return null;
      out.set(v, (i + 1) * size - v.length);
    }
    seq.finish();
    return out;
  } catch (err) {
    if (err instanceof DerError) return null;
    throw err;
  }
}

const importedKeys = new Map(); // spki hex + algorithm → Promise<CryptoKey>

/** Check `signature` over `message` with the key of `spki` (type `key` from keyType); false if it fails. */
async function verifyWith(spki, key, { kind, hash }, message, signature) {
  let importAs = key.importAs;
  let params = importAs;
  let sig = signature;
  if (kind === 'ecdsa') {
    sig = ecdsaSignatureToRaw(signature, key.size);
    if (!sig) return false;
    params = { name: 'ECDSA', hash };
  } else if (kind === 'rsa') {
    importAs = params = { name: 'RSASSA-PKCS1-v1_5', hash };
  }
  const id = `${toHex(spki)}/${JSON.stringify(importAs)}`;
  let imported = importedKeys.get(id);
  if (!imported) {
    if (importedKeys.size > 64) importedKeys.clear();
    imported = subtle.importKey('spki', spki, importAs, false, ['verify']);
    importedKeys.set(id, imported);
  }
  try {
    return await subtle.verify(params, await imported, sig, message);
  } catch {
    return false; // a key WebCrypto refuses, or a signature of the wrong size
  }
}

/** Parse an agent certificate as webpki's EndEntityCert does: ProofError bad_certificate if it cannot. */
function endEntity(der) {
  try {
    const cert = parseCertificate(der);
    cert.key = keyType(cert.spki);
    return cert;
  } catch (err) {
    if (err instanceof DerError) throw badCertificate(err.message);
    throw err;
  }
}

/** Check an agent's signature with an already parsed certificate (see verifySignature). */
async function verifyAgentSignature(cert, scheme, message, signature) {
  const alg = SCHEME_ALGORITHMS[scheme];
  if (!alg) throw unknownScheme(scheme);
  if (cert.key.type !== alg.key || !(await verifyWith(cert.spki, cert.key, alg, message, signature))) throw badSignature();
}

/**
 * Check `signature` (scheme `scheme`) over `message` with the key of the certificate `certDer`
 * (sign.rs `verify`): ProofError unknown_scheme, bad_certificate, or bad_signature (also when
 * the scheme is not the one of the certificate's key).
 */
export async function verifySignature(certDer, scheme, message, signature) {
  if (!SCHEME_ALGORITHMS[scheme]) throw unknownScheme(scheme);
  await verifyAgentSignature(endEntity(certDer), scheme, message, signature);
}

/**
 * Check a version-2 DEK record's signature (from parseDekRecord) against the certificate it
 * carries (sign.rs `verify_dek_record`), not yet whether that certificate is trusted.
 */
export async function verifyDekRecord(record) {
  if (record.version !== 2) throw badSignature();
  await verifySignature(record.cert, record.scheme, concat(DEK_CONTEXT, record.signed), record.signature);
}

/** The agent id a certificate names: the first subject common name (pki.rs `agent_identity`). */
export function agentIdentity(certDer) {
  const cert = endEntity(certDer);
  try {
    const names = new DerReader(cert.subject, 0, cert.subject.length, 'subject').sequence('Name');
    while (!names.done) {
      const rdn = names.sequence('RelativeDistinguishedName', TAG.SET);
      while (!rdn.done) {
        const atv = rdn.sequence('AttributeTypeAndValue');
        const oid = atv.oid('type');
        const value = atv.next(undefined, 'value');
        atv.finish();
        if (oid === OID.commonName) return checkAgentId(commonNameText(value));
      }
    }
  } catch (err) {
    if (err instanceof DerError) throw badCertificate(err.message);
    throw err;
  }
  throw badCertificate('certificate has no common name');
}

function commonNameText({ tag, value }) {
  if (tag === 0x0c) {
    try {
      return fromUtf8(value);
    } catch {
      throw badCertificate('common name is not valid UTF-8');
    }
  }
  const text = String.fromCharCode(...value);
  if (tag === 0x13 && /^[A-Za-z0-9 '()+,\-./:=?]*$/.test(text)) return text;
  throw badCertificate('common name is not a UTF-8 or printable string');
}

/** AgentId::new's rules: 1 to 64 characters, no control characters. */
function checkAgentId(name) {
  const chars = [...name].length;
  if (chars === 0) throw badCertificate('agent id is empty');
  if (chars > 64) throw badCertificate(`agent id has ${chars} characters, at most 64 allowed`);
  if (/\p{Cc}/u.test(name)) throw badCertificate('agent id contains a control character; only printable text is allowed');
  return name;
}

/** The agent CA certificate a reviewer pins (sign.rs `AgentCa`); trusted as given (its validity is not checked). */
export class AgentCa {
  /** Use AgentCa.fromDer or AgentCa.fromPem. */
  constructor(der, anchor, fp) {
    this.der = der;
    this.anchor = anchor;
    /** `sha256:<hex>` of the CA certificate's DER: show it, so a reviewer can compare it with the one they were given. */
    this.fingerprint = fp;
  }

  /** The first CERTIFICATE block of `text` (as `ca.crt`). */
  static async fromPem(text) {
    const block = pemBlocks(text).find((b) => b.label === 'CERTIFICATE');
    if (!block) throw new DerError('agent CA: no CERTIFICATE block in the PEM text');
    return AgentCa.fromDer(block.der);
  }

  static async fromDer(der) {
    let anchor;
    try {
      anchor = parseCertificate(der, { anchor: true });
      anchor.key = keyType(anchor.spki);
    } catch (err) {
      if (err instanceof DerError) throw new DerError(`not a CA certificate: ${err.message}`);
      throw err;
    }
    if (anchor.ext.nameConstraints) {
      // webpki would check the agent certificate's names against them; this page does not.
      throw new DerError('agent CA: a CA certificate with name constraints is not supported in the console; use `sealstream verify --agent-ca`');
    }
    return new AgentCa(der, anchor, await fingerprint(der));
  }

  /**
   * Accept `certDer` if this CA issued it directly, for client authentication, for agent `agent`,
   * valid at `atUs` (µs since the epoch, a BigInt or number): returns {fingerprint, serial} (sign.rs
   * `CertInfo`). Throws ProofError bad_certificate, untrusted or wrong_agent, as `AgentCa::check`.
   */
  async check(certDer, agent, atUs) {
    const ee = endEntity(certDer);
    // Microseconds against the certificate's whole seconds, both ends inclusive (format.md
    // "Agent certificates"): a record made 0.5 s after notAfter is refused.
    const us = BigInt(atUs);
    try {
      const v = new DerReader(ee.validity, 0, ee.validity.length, 'validity');
      const notBefore = readTime(v, 'notBefore');
      const notAfter = readTime(v, 'notAfter');
      v.finish();
      const at = Number(us) / 1e6;
      if (notBefore > notAfter) throw untrusted('InvalidCertValidity');
      if (us < BigInt(notBefore) * 1_000_000n) throw untrusted(`CertNotValidYet (at ${iso(at)}, valid from ${iso(notBefore)})`);
      if (us > BigInt(notAfter) * 1_000_000n) throw untrusted(`CertExpired (at ${iso(at)}, valid until ${iso(notAfter)})`);
      if (isCa(ee.ext.basicConstraints)) throw untrusted('CaUsedAsEndEntity');
      if (ee.ext.extKeyUsage) {
        const usages = [];
        const r = new DerReader(ee.ext.extKeyUsage, 0, ee.ext.extKeyUsage.length, 'extKeyUsage');
        while (!r.done) usages.push(r.oid('KeyPurposeId'));
        if (!usages.length) throw untrusted('EmptyEkuExtension');
        if (!usages.includes(OID.clientAuth)) throw untrusted(`RequiredEkuNotFound (client authentication; the certificate allows ${usages.join(', ')})`);
      }
    } catch (err) {
      if (err instanceof DerError) throw untrusted(`BadDer (${err.message})`);
      throw err;
    }
    if (!equalBytes(ee.issuer, this.anchor.subject)) throw untrusted('UnknownIssuer');
    let alg;
    try {
      alg = certAlgorithm(ee.sigAlg);
    } catch (err) {
      if (err instanceof DerError) throw untrusted('UnsupportedSignatureAlgorithm');
      throw err;
    }
    const key = this.anchor.key;
    const fits = alg.kind === 'ecdsa' ? key.type === 'P-256' || key.type === 'P-384'
      : alg.kind === 'ed25519' ? key.type === 'Ed25519'
        : key.type === 'RSA' && key.bits >= 2048 && key.bits <= 8192;
    if (!fits) throw untrusted('UnsupportedSignatureAlgorithmForPublicKey');
    if (!(await verifyWith(this.anchor.spki, key, alg, ee.tbs, ee.signature))) throw untrusted('BadSignature');
    const found = agentIdentity(certDer);
    if (found !== agent) {
      throw new ProofError('wrong_agent', `the certificate names agent ${JSON.stringify(found)}, the data names ${JSON.stringify(agent)}`, found);
    }
    return { fingerprint: await fingerprint(certDer), serial: toHex(ee.serial) };
  }
}

function isCa(basicConstraints) {
  if (!basicConstraints) return false;
  const r = new DerReader(basicConstraints, 0, basicConstraints.length, 'basicConstraints');
  let ca = false;
  if (r.peekTag() === 0x01) {
    const b = r.next(0x01, 'cA').value;
    if (b.length !== 1 || (b[0] !== 0 && b[0] !== 0xff)) throw new DerError('basicConstraints: bad BOOLEAN');
    ca = b[0] === 0xff;
  }
  if (!r.done) r.smallInteger('pathLenConstraint');
  r.finish();
  return ca;
}

/** The CA's signature algorithm from an AlgorithmIdentifier's contents: {kind, hash}. */
function certAlgorithm(content) {
  const r = new DerReader(content, 0, content.length, 'signatureAlgorithm');
  const oid = r.oid('algorithm');
  let param = 'none';
  if (!r.done) {
    const p = r.next();
    param = p.tag === TAG.NULL && p.value.length === 0 ? 'null' : 'other';
  }
  r.finish();
  const alg = CERT_ALGORITHMS[oid];
  if (!alg || !alg.params.includes(param)) throw new DerError(`unsupported signature algorithm ${oid}`);
  return alg;
}

// ---- one stream ----

const KIND_NAMES = { 1: 'frames', 2: 'keystrokes', 3: 'activity' };
const rangeWords = (a, b) => (a === b ? `chunk ${a}` : `chunks ${a}–${b}`);

/**
 * The proof of one stream (agent, session, stream id), fed as it is fetched:
 *
 *   const proof = new StreamProof({ agent, sessionId, streamId, ca });
 *   await proof.addRecord(recordBytes);        // each DEK record its chunks name
 *   const plain = await proof.open(chunk, keys); // or: await proof.add(chunk) without keys
 *   const v = await proof.verdict();           // {status, firstUnprovenSeq, message, ...}
 *
 * Chunks may come in any order and more than once; a verdict judges the chunks given so far as
 * the whole stream as stored (a hole is a removed chunk), so feed a stream in seq order, all of
 * it, before showing a verdict as final. Calls are queued, so they may overlap.
 */
export class StreamProof {
  #entries = []; // one per sequence number, in seq order: hashes and header fields, no bytes
  #linked = 0; // entries whose chain head is current
  #records = new Map(); // DEK id hex → parsed record naming this stream's agent
  #recordChecks = new Map(); // DEK id hex → Promise<{cert, info} | {problem}>
  #queue = Promise.resolve();
  #last = null;
  #chainChecked = false; // the last #prove checked the chain against a CA-checked certificate

  /** `agent`: the agent id; `sessionId`: 16 bytes or their hex; `ca`: an AgentCa, or null (nothing pinned). */
  constructor({ agent, sessionId, streamId, ca = null }) {
    this.agent = agent;
    this.sessionHex = typeof sessionId === 'string' ? sessionId.replaceAll('-', '').toLowerCase() : toHex(sessionId);
    this.streamId = streamId;
    this.ca = ca;
  }

  #serial(fn) {
    const run = this.#queue.then(fn);
    this.#queue = run.catch(() => {});
    return run;
  }

  /**
   * A DEK record (bytes or parseDekRecord's result). A record of another agent is not this
   * stream's, whatever its DEK id (it does not stand in for the agent's own): returns false.
   */
  addRecord(record) {
    return this.#serial(() => {
      const r = record instanceof Uint8Array ? parseDekRecord(record) : record;
      if (r.agent !== this.agent) return false;
      const dek = toHex(r.dekId);
      this.#records.set(dek, r);
      this.#recordChecks.delete(dek);
      for (const e of this.#entries) e.sigOk = undefined;
      return true;
    });
  }

  /** Take a parsed chunk (parseChunk) of this stream; returns {seq, same} (false: it differs from the copy held). */
  async add(chunk) {
    const { entry, same } = await this.#add(chunk);
    return { seq: entry.seq, same };
  }

  /** Hash `chunk` (outside the queue), then file it by its number (inside). */
  async #add(chunk) {
    if (chunk.agent !== this.agent || toHex(chunk.sessionId) !== this.sessionHex || chunk.streamId !== this.streamId) {
      throw new Error(`chunk ${chunk.seq} belongs to another stream (agent "${chunk.agent}", stream ${chunk.streamId})`);
    }
    const digest = await sha256(chunk.bytes);
    const core = chunk.core.length === chunk.bytes.length ? digest : await sha256(chunk.core);
    return this.#serial(() => {
      let lo = 0;
      let hi = this.#entries.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (this.#entries[mid].seq < chunk.seq) lo = mid + 1;
        else hi = mid;
      }
      const there = this.#entries[lo];
      if (there && there.seq === chunk.seq) {
        const same = equalBytes(there.digest, digest);
        if (!same) there.conflict = true;
        return { entry: there, same };
      }
      const e = {
        seq: chunk.seq, version: chunk.version, kind: chunk.kind, final: chunk.final, gap: chunk.gap,
        checkpoint: chunk.checkpoint, dek: toHex(chunk.dekId), captureUs: chunk.captureUs,
        empty: chunk.ciphertext.length === TAG_LEN, digest, core,
        scheme: chunk.scheme, signature: chunk.signature?.slice() ?? null, // a copy: keep no chunk buffer alive
        conflict: false, tag: null, gapRange: null, head: null, sigOk: undefined,
      };
      this.#entries.splice(lo, 0, e);
      if (lo < this.#linked) this.#linked = lo;
      return { entry: e, same: true };
    });
  }

  /**
   * Take `chunk` and open it with `keys` (chunk.js StreamKeys), recording whether its tag holds
   * (and a gap record's range): returns the plaintext, or throws what keys.open throws.
   */
  async open(chunk, keys) {
    const { entry, same } = await this.#add(chunk);
    let plain;
    try {
      plain = await keys.open(chunk);
    } catch (err) {
      if (err instanceof TamperedError && same) await this.#serial(() => { entry.tag = err.message; });
      throw err;
    }
    if (same) {
      let gapRange = null;
      if (chunk.gap) {
        try {
          const g = parseGap(plain);
          gapRange = [g.firstSeq, g.lastSeq];
        } catch {
          gapRange = 'bad';
        }
      }
      await this.#serial(() => {
        entry.tag = 'ok';
        entry.gapRange = gapRange;
      });
    }
    return plain;
  }

  /** Is `chunk` the very chunk the last verdict proved signed (same bytes, inside the proven prefix)? */
  async isProven(chunk) {
    const v = this.#last;
    if (!v || v.provenThrough === null || chunk.seq > BigInt(v.provenThrough)) return false;
    const e = this.#entries.find((x) => x.seq === chunk.seq);
    return Boolean(e && !e.conflict && equalBytes(e.digest, await sha256(chunk.bytes)));
  }

  /**
   * The chunks held, in seq order, with the fields of their own headers: [{seq, captureUs, final,
   * gap, checkpoint, empty, authenticated, proven}] (numbers; `authenticated`: its tag was checked
   * here; `proven`: the last verdict found it signed). Build the timeline from this, not the index.
   */
  chunkList() {
    const through = this.#last?.provenThrough ?? null;
    return this.#entries.map((e) => ({
      seq: Number(e.seq), captureUs: Number(e.captureUs), final: e.final, gap: e.gap, checkpoint: e.checkpoint,
      empty: e.empty, authenticated: e.tag === 'ok', proven: through !== null && e.seq <= BigInt(through) && !e.conflict,
    }));
  }

  /**
   * The verdict on the chunks given so far, as `verify --agent-ca` gives it (without a pinned CA,
   * as `verify`): {status: verified | unsigned | incomplete | tampered, firstUnprovenSeq (the
   * first chunk no valid signature covers, before any problem; null when every chunk given is
   * proven), provenThrough, message (one sentence for the reviewer), problems (verify's words),
   * verdict (verify's: ok | unproven | incomplete | unsigned | no_dek_record | tampered), proof (verify's
   * `signature`), kind, chunks, finalSeq, declaredGaps, missingDekRecords, firstCaptureUs,
   * lastCaptureUs, authenticated (chunks whose tag was checked), caFingerprint}.
   */
  verdict() {
    return this.#serial(async () => {
      this.#last = await this.#judge();
      return this.#last;
    });
  }

  async #judge() {
    const es = this.#entries;
    const n = es.length;
    const base = { agent: this.agent, streamId: this.streamId, caFingerprint: this.ca?.fingerprint ?? null };
    if (!n) {
      return {
        ...base, status: 'incomplete', verdict: 'incomplete', firstUnprovenSeq: 0, provenThrough: null,
        message: 'no chunks of this stream were served', problems: [], proof: { proof: 'unsigned' }, kind: null, chunks: 0,
        finalSeq: null, declaredGaps: [], missingDekRecords: [], firstCaptureUs: null, lastCaptureUs: null, authenticated: 0,
      };
    }
    // {seq (BigInt; -1n for the whole stream), text (verify's words), words (the reviewer's), copy}
    const problems = [];
    const problem = (seq, text, words, copy = false) => problems.push({ seq, text, words, copy });
    const kind = es[0].kind;
    const gaps = [];
    const missing = [];
    let expected = 0n;
    let finalSeq = null;
    let first = es[0].captureUs;
    let last = es[0].captureUs;
    for (const e of es) {
      const s = e.seq;
      if (e.captureUs < first) first = e.captureUs;
      if (e.captureUs > last) last = e.captureUs;
      if (e.conflict) problem(s, `different chunks stored under sequence number ${s}`, `two different chunks are stored as chunk ${s}`, true);
      if (s > expected) {
        if (e.gap) {
          gaps.push([expected, s - 1n]);
          if (e.gapRange && (e.gapRange === 'bad' || e.gapRange[0] !== expected || e.gapRange[1] !== s - 1n)) {
            problem(s, `chunk ${s}: gap record does not match the missing chunks`, `${rangeWords(expected, s - 1n)} removed (gap record ${s} declares other chunks)`);
          }
        } else {
          problem(expected, expected === s - 1n ? `chunk ${expected} is missing` : `chunks ${expected} to ${s - 1n} are missing`,
            `${rangeWords(expected, s - 1n)} removed`);
        }
      } else if (e.gap) {
        problem(s, `chunk ${s} is a gap record with no missing chunks before it`, `chunk ${s} is a forged gap record (nothing is missing before it)`);
      }
      expected = s + 1n;
      if (finalSeq !== null) problem(s, `chunk ${s} comes after the final chunk ${finalSeq}`, `chunk ${s} added after the final chunk ${finalSeq}`);
      if (e.final && finalSeq === null) finalSeq = s;
      if (e.kind !== kind) {
        problem(s, `chunk ${s} is ${KIND_NAMES[e.kind]} in a ${KIND_NAMES[kind]} stream`, `chunk ${s} does not belong to this ${KIND_NAMES[kind]} stream`);
      }
      if (!this.#records.has(e.dek) && !missing.includes(e.dek)) missing.push(e.dek);
      if (e.tag !== null && e.tag !== 'ok') problem(s, e.tag, `chunk ${s} altered (it fails authentication)`);
    }
    const proof = await this.#prove(es, problem);

    // The proven prefix: chunks a valid checkpoint covers, before the first problem in the chain
    // (another copy of a chunk is not one: the chain runs over the copy held, which a later
    // checkpoint proves; the number itself is still marked unproven).
    const lowest = (ps) => ps.reduce((m, p) => (m === null || p.seq < m ? p.seq : m), null);
    const firstProblem = lowest(problems);
    const firstBreak = lowest(problems.filter((p) => !p.copy));
    let provenCount = 0;
    if (this.#chainChecked) {
      for (let i = 0; i < n; i++) {
        if (firstBreak !== null && es[i].seq >= firstBreak) break;
        if (es[i].checkpoint && es[i].sigOk === true) provenCount = i + 1;
      }
    }
    let firstUnproven = provenCount < n ? es[provenCount].seq : null;
    if (firstProblem !== null) firstUnproven = firstUnproven === null || firstProblem < firstUnproven ? firstProblem : firstUnproven;
    if (firstUnproven !== null && firstUnproven < 0n) firstUnproven = 0n;
    // verify's verdict (inspect.rs `Verdict::of`): an unproven tail counts only against a pinned
    // CA; an unsigned stream with a CA pinned is `unsigned`, which --allow-incomplete never waives.
    const unproven = proof.proof === 'signed' && proof.caChecked && proof.unproven > 0;
    const verdict = problems.length ? 'tampered' : missing.length ? 'no_dek_record'
      : proof.proof === 'unsigned' && this.ca ? 'unsigned' : finalSeq === null ? 'incomplete'
        : unproven ? 'unproven' : 'ok';

    const lastSeq = es[n - 1].seq;
    const cut = `cut after chunk ${lastSeq}, or still recording: there is no final chunk`;
    let status;
    let message;
    if (problems.length) {
      status = 'tampered';
      const first = [...problems].sort((a, b) => (a.seq < b.seq ? -1 : a.seq > b.seq ? 1 : 0))[0];
      message = first.words + (problems.length > 1 ? ` (and ${problems.length - 1} more problem${problems.length > 2 ? 's' : ''})` : '');
    } else if (missing.length && proof.proof !== 'unsigned') {
      status = 'incomplete';
      message = `no DEK record for ${missing.join(', ')} was served: these chunks cannot be checked or decrypted`;
    } else if (proof.proof === 'unsigned' || !proof.caChecked) {
      status = 'unsigned';
      message = proof.proof === 'unsigned'
        ? 'not signed by a CA-issued agent: an unsigned (format version 1) recording, which anyone with the public KEK could have made'
        : 'signature not checked: no agent CA is pinned in this console';
      if (missing.length) message += `; no DEK record for ${missing.join(', ')}`;
      else if (finalSeq === null) message += `; ${cut}`;
    } else if (finalSeq === null) {
      status = 'incomplete';
      message = firstUnproven === null ? `${cut} (chunks 0–${lastSeq} are signed by the agent)`
        : `${cut}; ${rangeWords(firstUnproven, lastSeq)} not yet signed${provenCount ? ` (chunks 0–${es[provenCount - 1].seq} are)` : ''}`;
    } else if (unproven) {
      status = 'incomplete';
      message = `not proven to its end: ${rangeWords(firstUnproven, lastSeq)} carry no valid agent signature`;
    } else {
      status = 'verified';
      message = `verified: signed by agent "${this.agent}" through its final chunk ${finalSeq}`
        + (gaps.length ? `; the agent dropped ${gaps.map(([a, b]) => rangeWords(a, b)).join(', ')} (its spool was full)` : '');
    }
    const num = (x) => (x === null ? null : Number(x));
    return {
      ...base, status, verdict, message,
      firstUnprovenSeq: status === 'verified' ? null : num(firstUnproven),
      provenThrough: provenCount ? Number(es[provenCount - 1].seq) : null,
      problems: problems.map((p) => p.text),
      proof, kind: KIND_NAMES[kind], chunks: n, finalSeq: num(finalSeq),
      declaredGaps: gaps.map(([a, b]) => [Number(a), Number(b)]), missingDekRecords: missing,
      firstCaptureUs: Number(first), lastCaptureUs: Number(last),
      authenticated: es.filter((e) => e.tag === 'ok').length,
    };
  }

  /** inspect.rs `prove`: the DEK record's signature and certificate, then the chain and each checkpoint. */
  async #prove(es, problem) {
    const WHOLE = -1n;
    this.#chainChecked = false;
    const v2 = es.filter((e) => e.version === 2).length;
    if (v2 === 0) {
      const signed = es.find((e) => this.#records.get(e.dek)?.version === 2);
      if (signed) {
        problem(WHOLE,
          `unsigned (version 1) chunks under DEK ${signed.dek}, whose record its agent signed: sealed by someone who unwrapped the DEK, not by the agent`,
          'not made by the agent: unsigned chunks under the agent\'s signed key, sealed by someone holding the KEK');
        return { proof: 'invalid' };
      }
      return { proof: 'unsigned' };
    }
    if (v2 !== es.length) {
      problem(WHOLE, 'the stream mixes signed (version 2) and unsigned chunks',
        'signed and unsigned chunks are mixed: the unsigned ones were not made by the agent');
      return { proof: 'invalid' };
    }
    const dek = es[0].dek;
    if (es.some((e) => e.dek !== dek)) {
      problem(WHOLE, 'a signed stream\'s chunks name more than one DEK', 'chunks under more than one key in a signed stream');
      return { proof: 'invalid' };
    }
    if (!this.#records.has(dek)) return { proof: 'invalid' }; // reported as a missing DEK record
    let check = this.#recordChecks.get(dek);
    if (!check) {
      check = this.#checkRecord(this.#records.get(dek));
      this.#recordChecks.set(dek, check);
    }
    const c = await check;
    if (c.problem) {
      problem(WHOLE, `DEK ${dek}: ${c.problem.text}`, c.problem.words);
      return { proof: 'invalid' };
    }
    let head = this.#linked ? es[this.#linked - 1].head : CHAIN_START;
    for (let i = this.#linked; i < es.length; i++) {
      head = es[i].head = await chainLink(head, es[i].core);
      es[i].sigOk = undefined;
    }
    this.#linked = es.length;
    let checkpoint = null;
    let proven = 0;
    let lastGood = -1n;
    let failed = false;
    for (let i = 0; i < es.length; i++) {
      const e = es[i];
      if (!e.checkpoint) continue;
      if (e.sigOk === undefined) {
        try {
          await verifyAgentSignature(c.cert, e.scheme, checkpointMessage(e.head), e.signature);
          e.sigOk = true;
        } catch (err) {
          if (!(err instanceof ProofError)) throw err;
          e.sigOk = err.message;
        }
      }
      if (e.sigOk === true) {
        checkpoint = Number(e.seq);
        proven = i + 1;
        lastGood = e.seq;
      } else {
        failed = true;
        const them = lastGood + 1n === e.seq ? 'it' : 'them';
        problem(e.seq,
          `checkpoint at chunk ${e.seq}: ${e.sigOk} (a chunk up to it was altered, removed, added or reordered, or the signature was forged)`,
          `${rangeWords(lastGood + 1n, e.seq)} altered, removed or added after the agent signed ${them} (the signature at chunk ${e.seq} does not verify)`);
      }
    }
    // The chain was checked: the page may still show which chunks valid checkpoints cover.
    this.#chainChecked = Boolean(this.ca);
    // A signature that does not verify makes the proof invalid (inspect.rs `prove`).
    if (failed) return { proof: 'invalid' };
    return { proof: 'signed', cert: c.info, caChecked: Boolean(this.ca), checkpoint, proven, unproven: es.length - proven };
  }

  /** The record's signature, then its certificate against the pinned CA: {cert, info} or {problem}. */
  async #checkRecord(record) {
    if (record.version !== 2) {
      return {
        problem: { text: 'the record is unsigned but its chunks are signed (version 2)', words: 'the key record is unsigned but its chunks are signed' },
      };
    }
    let cert;
    try {
      await verifyDekRecord(record); // sign.rs order: the scheme, the certificate, the signature
      cert = endEntity(record.cert);
    } catch (err) {
      if (!(err instanceof ProofError)) throw err;
      return {
        problem: {
          text: `record signature: ${err.message}`,
          words: err.kind === 'bad_certificate'
            ? `not signed by a CA-issued agent: the key record's certificate is not one this console accepts (${err.why})`
            : 'the agent\'s signature on the key record does not verify: the record was altered',
        },
      };
    }
    if (!this.ca) return { cert, info: { fingerprint: await fingerprint(record.cert), serial: toHex(cert.serial) } };
    try {
      return { cert, info: await this.ca.check(record.cert, this.agent, record.createdUs) };
    } catch (err) {
      if (!(err instanceof ProofError)) throw err;
      return { problem: { text: `agent certificate: ${err.message}`, words: certificateWords(err) } };
    }
  }
}

/** What a refused agent certificate means to a reviewer. */
function certificateWords(err) {
  if (err.kind === 'wrong_agent') return `signed by the certificate of agent ${JSON.stringify(err.why)}, not of this agent`;
  if (err.kind === 'bad_certificate') return `not signed by a CA-issued agent: the certificate is not one this console accepts (${err.why})`;
  const why = err.why;
  if (why.startsWith('CertExpired') || why.startsWith('CertNotValidYet')) {
    return `signed by an agent certificate that was not valid when the recording's key was made (${why})`;
  }
  if (why === 'CaUsedAsEndEntity') return 'signed by a CA certificate, not by an agent certificate';
  if (why.startsWith('RequiredEkuNotFound') || why === 'EmptyEkuExtension') {
    return 'signed by a certificate not issued for agents (no client authentication)';
  }
  return 'signed by an agent certificate not issued by the pinned CA';
}

/**
 * One stream in one call (tests, exports): `chunks` and `records` as bytes or parsed; `keys`
 * (StreamKeys) to open every chunk too (a failed tag is then named: "chunk 3 altered"); agent,
 * session and stream default to the first chunk's. Returns StreamProof's verdict.
 */
export async function proveStream({ chunks, records = [], ca = null, keys = null, agent, sessionId, streamId }) {
  const parsed = chunks.map((c) => (c instanceof Uint8Array ? parseChunk(c) : c));
  const first = parsed[0];
  const proof = new StreamProof({
    agent: agent ?? first?.agent, sessionId: sessionId ?? first?.sessionId ?? new Uint8Array(16), streamId: streamId ?? first?.streamId, ca,
  });
  for (const r of records) await proof.addRecord(r);
  for (const c of parsed) {
    if (!keys) {
      await proof.add(c);
      continue;
    }
    try {
      await proof.open(c, keys);
    } catch (err) {
      if (!(err instanceof TamperedError) && err.name !== 'UnknownDekError') throw err;
    }
  }
  return proof.verdict();
}
