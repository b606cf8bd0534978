// KEK key files in the browser: recognising which form a PEM private key is in, opening the
// forms WebCrypto can handle (PKCS#8 PBES2 with PBKDF2 and AES-128/256-CBC, unencrypted PKCS#8
// and PKCS#1) as non-extractable RSA-OAEP keys, explaining the forms it cannot, and the KEK id
// of a public key or certificate. The only secret that is ever a JS value is the passphrase.

import { DerError, DerReader, TAG, encodeOid, encodeTlv, pemBlocks, pemHeader } from './der.js';
import { toHex, utf8 } from './hex.js';

const subtle = globalThis.crypto.subtle;

/** The command that rewrites any private key openssl can read into openssl 3's default form. */
export const REENCRYPT_COMMAND =
  'openssl pkcs8 -topk8 -v2 aes-256-cbc -v2prf hmacWithSHA256 -in keypair.pem -out keypair-pkcs8.pem';
/** sealstream's equivalent of REENCRYPT_COMMAND. */
export const CONVERT_COMMAND = 'sealstream keys convert --in keypair.pem --out keypair-pkcs8.pem';

/** The key file is in a form the console cannot use; `.form` names it, the message says what to do. */
export class KeyFormError extends Error {
  constructor(form, message) {
    super(message);
    this.name = 'KeyFormError';
    this.form = form;
  }
}

/** The passphrase does not decrypt the key file. */
export class WrongPassphraseError extends Error {
  constructor(message = 'wrong passphrase for this key file') {
    super(message);
    this.name = 'WrongPassphraseError';
  }
}

const OID = {
  rsaEncryption: '1.2.840.113549.1.1.1',
  pbes2: '1.2.840.113549.1.5.13',
  pbkdf2: '1.2.840.113549.1.5.12',
  scrypt: '1.3.6.1.4.1.11591.4.11',
};

const PRFS = {
  '1.2.840.113549.2.7': { prf: 'sha1', hash: 'SHA-1' },
  '1.2.840.113549.2.9': { prf: 'sha256', hash: 'SHA-256' },
  '1.2.840.113549.2.10': { prf: 'sha384', hash: 'SHA-384' },
  '1.2.840.113549.2.11': { prf: 'sha512', hash: 'SHA-512' },
};
const OTHER_PRFS = {
  '1.2.840.113549.2.8': 'hmacWithSHA224',
  '1.2.840.113549.2.12': 'hmacWithSHA512-224',
  '1.2.840.113549.2.13': 'hmacWithSHA512-256',
};

const CIPHERS = {
  '2.16.840.1.101.3.4.1.2': { cipher: 'aes-128-cbc', keyLength: 16 },
  '2.16.840.1.101.3.4.1.42': { cipher: 'aes-256-cbc', keyLength: 32 },
};
// PBES2 ciphers WebCrypto cannot run (Chromium refuses 192-bit AES; DES is absent).
const OTHER_CIPHERS = {
  '2.16.840.1.101.3.4.1.22': ['pkcs8-pbes2-aes-192-cbc', 'AES-192-CBC'],
  '1.2.840.113549.3.7': ['pkcs8-pbes2-des-ede3-cbc', 'DES-EDE3-CBC'],
  '1.3.14.3.2.7': ['pkcs8-pbes2-des-cbc', 'DES-CBC'],
  '1.2.840.113549.3.2': ['pkcs8-pbes2-rc2-cbc', 'RC2-CBC'],
};

const PBES1 = {
  '1.2.840.113549.1.5.1': 'pbeWithMD2AndDES-CBC',
  '1.2.840.113549.1.5.3': 'pbeWithMD5AndDES-CBC',
  '1.2.840.113549.1.5.4': 'pbeWithMD2AndRC2-CBC',
  '1.2.840.113549.1.5.6': 'pbeWithMD5AndRC2-CBC',
  '1.2.840.113549.1.5.10': 'pbeWithSHA1AndDES-CBC',
  '1.2.840.113549.1.5.11': 'pbeWithSHA1AndRC2-CBC',
  '1.2.840.113549.1.12.1.1': 'pbeWithSHAAnd128BitRC4',
  '1.2.840.113549.1.12.1.2': 'pbeWithSHAAnd40BitRC4',
  '1.2.840.113549.1.12.1.3': 'pbeWithSHAAnd3-KeyTripleDES-CBC',
  '1.2.840.113549.1.12.1.4': 'pbeWithSHAAnd2-KeyTripleDES-CBC',
  '1.2.840.113549.1.12.1.5': 'pbeWithSHAAnd128BitRC2-CBC',
  '1.2.840.113549.1.12.1.6': 'pbeWithSHAAnd40BitRC2-CBC',
};

const KEY_ALGORITHMS = {
  '1.2.840.10045.2.1': 'EC',
  '1.3.101.110': 'X25519',
  '1.3.101.111': 'X448',
  '1.3.101.112': 'Ed25519',
  '1.3.101.113': 'Ed448',
  '1.2.840.10040.4.1': 'DSA',
  '1.2.840.113549.1.3.1': 'DH',
  '1.2.840.113549.1.1.10': 'RSA-PSS (restricted to signatures)',
};

/** More PBKDF2 rounds than this would freeze the page; sealstream makes 600,000. */
export const MAX_ITERATIONS = 10_000_000;

// DER of AlgorithmIdentifier { rsaEncryption, NULL }, as openssl writes it.
const RSA_ALGORITHM_ID = encodeTlv(TAG.SEQUENCE, encodeOid(OID.rsaEncryption), encodeTlv(TAG.NULL));

function reencryptError(form, description) {
  return new KeyFormError(
    form,
    `this key file is in the ${description}, which the browser's WebCrypto cannot open. ` +
      `Re-encrypt it into openssl 3's default form (PKCS#8, PBES2, AES-256-CBC, HMAC-SHA256) with\n` +
      `  ${REENCRYPT_COMMAND}\n` +
      `or the equivalent\n  ${CONVERT_COMMAND}`,
  );
}

function notRsa(algorithm) {
  return new KeyFormError(
    'non-rsa',
    `the key is of type ${algorithm}; sealstream KEKs are RSA keys of 2048, 3072 or 4096 bits ` +
      '(made with `openssl genrsa -aes256 -out keypair.pem 2048`)',
  );
}

function malformed(what, err) {
  return new KeyFormError('malformed', `malformed ${what}: ${err.message}`);
}

function algorithmName(oid) {
  return KEY_ALGORITHMS[oid] ?? `unknown (OID ${oid})`;
}

/**
 * Which form the PEM private key in `pemText` is in. Returns one of
 *  - {form: 'pkcs8-pbes2', encrypted: true, prf, hash, cipher, keyLength, salt, iterations, iv, encryptedData}
 *  - {form: 'pkcs8-plain', encrypted: false, der}  (BEGIN PRIVATE KEY, an RSA key)
 *  - {form: 'pkcs1-plain', encrypted: false, der}  (BEGIN RSA PRIVATE KEY; `der` is it wrapped in PKCS#8)
 * and throws KeyFormError for anything else.
 */
export function classifyPrivateKey(pemText) {
  let blocks;
  try {
    blocks = pemBlocks(pemText);
  } catch (err) {
    if (err instanceof DerError) throw new KeyFormError('not-pem-private-key', `not a PEM private key: ${err.message}`);
    throw err;
  }
  const labels = blocks.map((b) => b.label);
  const block = blocks.find((b) => ['ENCRYPTED PRIVATE KEY', 'PRIVATE KEY', 'RSA PRIVATE KEY'].includes(b.label));
  if (!block) {
    if (labels.includes('EC PRIVATE KEY') || labels.includes('EC PARAMETERS')) throw notRsa('EC');
    if (labels.includes('DSA PRIVATE KEY')) throw notRsa('DSA');
    if (labels.includes('OPENSSH PRIVATE KEY')) {
      throw new KeyFormError('openssh',
        'this key file is in the OpenSSH private key form (BEGIN OPENSSH PRIVATE KEY), which neither WebCrypto ' +
          'nor openssl reads. Rewrite a copy as encrypted PKCS#8 with `ssh-keygen -p -m PKCS8 -f keypair-copy`');
    }
    const found = labels.length ? ` (it holds ${labels.map((l) => `"${l}"`).join(', ')})` : '';
    throw new KeyFormError(
      'not-pem-private-key',
      `not a PEM private key${found}; expected "BEGIN ENCRYPTED PRIVATE KEY", "BEGIN PRIVATE KEY" or "BEGIN RSA PRIVATE KEY"`,
    );
  }
  if (block.label === 'ENCRYPTED PRIVATE KEY') return classifyEncrypted(block.der);
  if (block.label === 'PRIVATE KEY') {
    try {
      const info = new DerReader(block.der, 0, block.der.length, 'PKCS#8').sequence('PrivateKeyInfo');
      info.integer('version');
      const oid = info.sequence('privateKeyAlgorithm').oid('algorithm');
      if (oid !== OID.rsaEncryption) throw notRsa(algorithmName(oid));
    } catch (err) {
      if (err instanceof DerError) throw malformed('PKCS#8 private key', err);
      throw err;
    }
    return { form: 'pkcs8-plain', encrypted: false, der: block.der };
  }
  // RSA PRIVATE KEY: PKCS#1, possibly in the traditional encrypted form.
  const procType = pemHeader(block, 'Proc-Type');
  if (procType !== undefined && /ENCRYPTED/i.test(procType)) {
    const cipher = (pemHeader(block, 'DEK-Info') ?? 'no DEK-Info').split(',')[0].trim();
    throw reencryptError('traditional-encrypted', `traditional OpenSSL 1.x form (Proc-Type, ${cipher})`);
  }
  try {
    const key = new DerReader(block.der, 0, block.der.length, 'PKCS#1').sequence('RSAPrivateKey');
    key.integer('version');
    key.integer('modulus');
  } catch (err) {
    if (err instanceof DerError) throw malformed('PKCS#1 RSA private key', err);
    throw err;
  }
  const der = encodeTlv(TAG.SEQUENCE, encodeTlv(TAG.INTEGER, new Uint8Array([0])), RSA_ALGORITHM_ID,
    encodeTlv(TAG.OCTET_STRING, block.der));
  return { form: 'pkcs1-plain', encrypted: false, der };
}

function classifyEncrypted(der) {
  try {
    const epki = new DerReader(der, 0, der.length, 'EncryptedPrivateKeyInfo').sequence('EncryptedPrivateKeyInfo');
    const alg = epki.sequence('encryptionAlgorithm');
    const scheme = alg.oid('algorithm');
    if (PBES1[scheme]) throw reencryptError('pkcs8-pbes1', `PKCS#8 PBES1 form (${PBES1[scheme]})`);
    if (scheme !== OID.pbes2) throw reencryptError('pkcs8-unknown', `PKCS#8 form encrypted with OID ${scheme}`);
    const params = alg.sequence('PBES2-params');
    const kdf = params.sequence('keyDerivationFunc');
    const kdfOid = kdf.oid('keyDerivationFunc');
    if (kdfOid === OID.scrypt) throw reencryptError('pkcs8-pbes2-scrypt', 'PKCS#8 PBES2 form with scrypt key derivation');
    if (kdfOid !== OID.pbkdf2) {
      throw reencryptError('pkcs8-pbes2-unsupported', `PKCS#8 PBES2 form with key derivation OID ${kdfOid}`);
    }
    const p = kdf.sequence('PBKDF2-params');
    const salt = p.octetString('salt');
    const iterations = p.smallInteger('iterationCount');
    const declaredLength = p.peekTag() === TAG.INTEGER ? p.smallInteger('keyLength') : undefined;
    let prfOid = '1.2.840.113549.2.7'; // DEFAULT hmacWithSHA1
    if (!p.done) {
      const prf = p.sequence('prf');
      prfOid = prf.oid('prf');
      if (!prf.done) prf.null('prf parameters');
      prf.finish();
    }
    p.finish();
    if (!PRFS[prfOid]) {
      throw reencryptError('pkcs8-pbes2-unsupported', `PKCS#8 PBES2 form with PRF ${OTHER_PRFS[prfOid] ?? prfOid}`);
    }
    const enc = params.sequence('encryptionScheme');
    const cipherOid = enc.oid('encryptionScheme');
    if (OTHER_CIPHERS[cipherOid]) {
      const [form, name] = OTHER_CIPHERS[cipherOid];
      throw reencryptError(form, `PKCS#8 PBES2 form with ${name}`);
    }
    if (!CIPHERS[cipherOid]) {
      throw reencryptError('pkcs8-pbes2-unsupported', `PKCS#8 PBES2 form with cipher OID ${cipherOid}`);
    }
    const iv = enc.octetString('IV');
    enc.finish();
    params.finish();
    const encryptedData = epki.octetString('encryptedData');
    epki.finish();
    const { cipher, keyLength } = CIPHERS[cipherOid];
    if (iv.length !== 16) throw new DerError(`the IV is ${iv.length} bytes, AES-CBC needs 16`);
    if (declaredLength !== undefined && declaredLength !== keyLength) {
      throw new DerError(`keyLength ${declaredLength} does not fit ${cipher}`);
    }
    if (iterations < 1 || iterations > MAX_ITERATIONS) {
      throw new DerError(`iteration count ${iterations} is outside 1..${MAX_ITERATIONS}`);
    }
    if (encryptedData.length === 0 || encryptedData.length % 16 !== 0) {
      throw new DerError('the encrypted data is not whole AES blocks');
    }
    return {
      form: 'pkcs8-pbes2', encrypted: true, ...PRFS[prfOid], cipher, keyLength, salt, iterations, iv, encryptedData,
    };
  } catch (err) {
    if (err instanceof DerError) throw malformed('encrypted PKCS#8 key', err);
    throw err;
  }
}

const RSA_OAEP = { name: 'RSA-OAEP', hash: 'SHA-256' };

/**
 * The KEK private key of `pemText` as a non-extractable RSA-OAEP/SHA-256 CryptoKey usable only
 * to unwrap. `passphrase` (a string, taken as UTF-8 without normalization) is needed only for
 * an encrypted key. Throws KeyFormError or WrongPassphraseError.
 */
export async function openPrivateKey(pemText, passphrase) {
  const k = classifyPrivateKey(pemText);
  if (!k.encrypted) {
    try {
      return await subtle.importKey('pkcs8', k.der, RSA_OAEP, false, ['unwrapKey']);
    } catch (err) {
      throw new KeyFormError('malformed', `the RSA private key does not import: ${err.name} ${err.message}`.trim());
    }
  }
  if (typeof passphrase !== 'string') throw new TypeError('this key file is encrypted: a passphrase is needed');
  const base = await subtle.importKey('raw', utf8(passphrase), 'PBKDF2', false, ['deriveKey']);
  const aes = await subtle.deriveKey(
    { name: 'PBKDF2', salt: k.salt, iterations: k.iterations, hash: k.hash },
    base,
    { name: 'AES-CBC', length: k.keyLength * 8 },
    false,
    ['unwrapKey'],
  );
  const cbc = { name: 'AES-CBC', iv: k.iv };
  try {
    return await subtle.unwrapKey('pkcs8', k.encryptedData, aes, cbc, RSA_OAEP, false, ['unwrapKey']);
  } catch (err) {
    if (err.name !== 'OperationError' && err.name !== 'DataError') throw err;
  }
  // Bad padding (OperationError) is a wrong passphrase; so, nearly always, is a plaintext that
  // is no RSA PKCS#8 (DataError) — unless the file holds another kind of key, which we check.
  const algorithm = await otherKeyAlgorithm(k.encryptedData, aes, cbc);
  if (algorithm) throw notRsa(algorithm);
  throw new WrongPassphraseError();
}

const OTHER_KEYS = [
  ['EC', { name: 'ECDSA', namedCurve: 'P-256' }, ['sign']],
  ['EC', { name: 'ECDSA', namedCurve: 'P-384' }, ['sign']],
  ['EC', { name: 'ECDSA', namedCurve: 'P-521' }, ['sign']],
  ['Ed25519', { name: 'Ed25519' }, ['sign']],
  ['X25519', { name: 'X25519' }, ['deriveBits']],
];

async function otherKeyAlgorithm(encryptedData, aes, cbc) {
  for (const [name, algorithm, usages] of OTHER_KEYS) {
    try {
      await subtle.unwrapKey('pkcs8', encryptedData, aes, cbc, algorithm, false, usages);
      return name;
    } catch {
      // not this kind (or not supported by this browser)
    }
  }
  return null;
}

/**
 * The SubjectPublicKeyInfo DER of the RSA public key in `publicPemText`: a `BEGIN PUBLIC KEY`
 * (as is), `BEGIN RSA PUBLIC KEY` (PKCS#1, wrapped as openssl -pubout would) or
 * `BEGIN CERTIFICATE` (its subjectPublicKeyInfo, byte for byte).
 */
export function publicKeySpki(publicPemText) {
  let blocks;
  try {
    blocks = pemBlocks(publicPemText);
  } catch (err) {
    if (err instanceof DerError) throw new KeyFormError('not-pem-public-key', `not a PEM public key: ${err.message}`);
    throw err;
  }
  const block = blocks.find((b) => ['PUBLIC KEY', 'RSA PUBLIC KEY', 'CERTIFICATE'].includes(b.label));
  if (!block) {
    const found = blocks.length ? ` (it holds ${blocks.map((b) => `"${b.label}"`).join(', ')})` : '';
    throw new KeyFormError(
      'not-pem-public-key',
      `not a PEM public key${found}; expected "BEGIN PUBLIC KEY", "BEGIN RSA PUBLIC KEY" or "BEGIN CERTIFICATE"`,
    );
  }
  try {
    let spki;
    if (block.label === 'PUBLIC KEY') spki = block.der;
    else if (block.label === 'RSA PUBLIC KEY') {
      checkRsaPublicKey(block.der);
      spki = encodeTlv(TAG.SEQUENCE, RSA_ALGORITHM_ID, encodeTlv(TAG.BIT_STRING, new Uint8Array([0]), block.der));
    } else {
      const cert = new DerReader(block.der, 0, block.der.length, 'certificate').sequence('Certificate');
      const tbs = cert.sequence('tbsCertificate');
      tbs.optional(0xa0); // [0] EXPLICIT version
      tbs.integer('serialNumber');
      tbs.next(TAG.SEQUENCE, 'signature');
      tbs.next(TAG.SEQUENCE, 'issuer');
      tbs.next(TAG.SEQUENCE, 'validity');
      tbs.next(TAG.SEQUENCE, 'subject');
      spki = tbs.next(TAG.SEQUENCE, 'subjectPublicKeyInfo').der;
    }
    // Check it is an RSA SPKI, with nothing before or after it.
    const outer = new DerReader(spki, 0, spki.length, 'SubjectPublicKeyInfo');
    const info = outer.sequence('SubjectPublicKeyInfo');
    outer.finish();
    const alg = info.sequence('algorithm');
    const oid = alg.oid('algorithm');
    if (oid !== OID.rsaEncryption) throw notRsa(algorithmName(oid));
    alg.null('rsaEncryption parameters');
    alg.finish();
    checkRsaPublicKey(info.bitString('subjectPublicKey'));
    info.finish();
    return spki;
  } catch (err) {
    if (err instanceof DerError) throw malformed(`public key ("${block.label}")`, err);
    throw err;
  }
}

function checkRsaPublicKey(der) {
  const outer = new DerReader(der, 0, der.length, 'RSAPublicKey');
  const key = outer.sequence('RSAPublicKey');
  outer.finish();
  key.integer('modulus');
  key.integer('publicExponent');
  key.finish();
}

/** The KEK id of a public key or certificate: "sha256:" + hex SHA-256 of its SPKI DER. */
export async function kekId(publicPemText) {
  const digest = await subtle.digest('SHA-256', publicKeySpki(publicPemText));
  return `sha256:${toHex(new Uint8Array(digest))}`;
}

/** The public key of `publicPemText` as an RSA-OAEP/SHA-256 CryptoKey (to wrap, e.g. in tests). */
export async function importPublicKey(publicPemText) {
  return subtle.importKey('spki', publicKeySpki(publicPemText), RSA_OAEP, true, ['encrypt', 'wrapKey']);
}
