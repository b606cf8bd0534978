// Key files made at test time by the real openssl CLI: the forms WebCrypto opens, the forms it
// cannot (each a KeyFormError whose re-encryption command really works), and KEK ids equal to
// `openssl pkey -pubin -outform der | sha256sum` for SPKI, PKCS#1 and certificate public keys.

import { before, after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, hkdfSync, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CONVERT_COMMAND, KeyFormError, WrongPassphraseError, classifyPrivateKey, importPublicKey, kekId, openPrivateKey,
} from '../assets/js/keyfile.js';
import { DEK_LABEL, unwrapDek } from '../assets/js/dek.js';
import { toHex } from '../assets/js/hex.js';

let dir;
const PASS = 'x';
const path = (name) => join(dir, name);
const read = (name) => readFileSync(path(name), 'utf8');
const openssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: ['pipe', 'pipe', 'pipe'] });
const pass = ['-passin', `pass:${PASS}`, '-passout', `pass:${PASS}`];

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'sealstream-console-'));
  // openssl 3's default: PKCS#8, PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC.
  openssl('genrsa', '-aes256', '-passout', `pass:${PASS}`, '-out', 'enc.pem', '2048');
  openssl('rsa', '-in', 'enc.pem', '-passin', `pass:${PASS}`, '-pubout', '-out', 'pub.pem');
  openssl('rsa', '-in', 'enc.pem', '-passin', `pass:${PASS}`, '-RSAPublicKey_out', '-out', 'rsapub.pem');
  openssl('req', '-x509', '-new', '-key', 'enc.pem', '-passin', `pass:${PASS}`, '-subj', '/CN=k', '-days', '1', '-out', 'cert.pem');
  openssl('genrsa', '-traditional', '-aes256', '-passout', `pass:${PASS}`, '-out', 'trad-aes.pem', '2048');
  openssl('rsa', '-in', 'trad-aes.pem', '-passin', `pass:${PASS}`, '-pubout', '-out', 'trad-aes-pub.pem');
  openssl('rsa', '-in', 'enc.pem', '-passin', `pass:${PASS}`, '-traditional', '-des3', '-passout', `pass:${PASS}`, '-out', 'trad-des3.pem');
  const topk8 = (out, ...opts) => openssl('pkcs8', '-topk8', ...opts, '-in', 'enc.pem', ...pass, '-out', out);
  topk8('aes192.pem', '-v2', 'aes-192-cbc');
  topk8('scrypt.pem', '-scrypt');
  topk8('des3.pem', '-v2', 'des3');
  topk8('pbes1.pem', '-v1', 'PBE-SHA1-3DES');
  topk8('aes128-sha1.pem', '-v2', 'aes-128-cbc', '-v2prf', 'hmacWithSHA1');
  topk8('aes256-sha384.pem', '-v2', 'aes-256-cbc', '-v2prf', 'hmacWithSHA384');
  topk8('aes256-sha512.pem', '-v2', 'aes-256-cbc', '-v2prf', 'hmacWithSHA512');
  topk8('sha224.pem', '-v2', 'aes-256-cbc', '-v2prf', 'hmacWithSHA224');
  // Unencrypted: openssl 3 writes BEGIN PRIVATE KEY; -traditional gives BEGIN RSA PRIVATE KEY.
  openssl('genrsa', '-out', 'plain.pem', '2048');
  openssl('rsa', '-in', 'plain.pem', '-pubout', '-out', 'plain-pub.pem');
  openssl('rsa', '-in', 'plain.pem', '-traditional', '-out', 'plain-trad.pem');
  // Not RSA.
  openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', 'ec.pem');
  openssl('ec', '-in', 'ec.pem', '-out', 'ec-trad.pem');
  openssl('ec', '-in', 'ec.pem', '-pubout', '-out', 'ec-pub.pem');
  openssl('pkcs8', '-topk8', '-v2', 'aes-256-cbc', '-in', 'ec.pem', '-passout', `pass:${PASS}`, '-out', 'ec-enc.pem');
  openssl('genpkey', '-algorithm', 'ed25519', '-out', 'ed25519.pem');
});

after(() => rmSync(dir, { recursive: true, force: true }));

/** `openssl pkey -pubin -outform der | sha256sum` of a public key file, as a KEK id. */
function opensslKekId(pubFile) {
  const der = openssl('pkey', '-pubin', '-in', pubFile, '-outform', 'der');
  const sum = execFileSync('sha256sum', { input: der }).toString().split(' ')[0];
  assert.equal(sum, createHash('sha256').update(der).digest('hex'));
  return `sha256:${sum}`;
}

/** Check `privateKey` is the private half of `pubFile`: a DEK wrapped under it unwraps to the same HKDF output. */
async function assertPair(privateKey, pubFile) {
  const dekBytes = randomBytes(32);
  const pub = await importPublicKey(read(pubFile));
  const wrapped = new Uint8Array(await crypto.subtle.encrypt({ name: 'RSA-OAEP', label: DEK_LABEL }, pub, dekBytes));
  const dek = await unwrapDek({ dekId: new Uint8Array(16), kekId: '', wrapped }, privateKey);
  const salt = new Uint8Array(16).fill(1);
  const info = new TextEncoder().encode('check');
  const bits = await crypto.subtle.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt, info }, dek, 256);
  assert.equal(toHex(new Uint8Array(bits)), Buffer.from(hkdfSync('sha256', dekBytes, salt, info, 32)).toString('hex'));
}

function assertOpenable(key) {
  assert.equal(key.type, 'private');
  assert.equal(key.algorithm.name, 'RSA-OAEP');
  assert.equal(key.algorithm.hash.name, 'SHA-256');
  assert.equal(key.extractable, false);
  assert.deepEqual(key.usages, ['unwrapKey']);
}

test('openssl version', () => {
  assert.match(openssl('version').toString(), /^OpenSSL 3\./);
});

test('genrsa -aes256 (PKCS#8 PBES2 default) opens; its -pubout KEK id is openssl pkey | sha256sum', async () => {
  const k = classifyPrivateKey(read('enc.pem'));
  assert.equal(k.form, 'pkcs8-pbes2');
  assert.equal(k.prf, 'sha256');
  assert.equal(k.cipher, 'aes-256-cbc');
  const key = await openPrivateKey(read('enc.pem'), PASS);
  assertOpenable(key);
  await assertPair(key, 'pub.pem');
  assert.equal(await kekId(read('pub.pem')), opensslKekId('pub.pem'));
  await assert.rejects(openPrivateKey(read('enc.pem'), 'y'), WrongPassphraseError);
});

test('RSAPublicKey_out (PKCS#1) and a self-signed certificate give the same KEK id as -pubout', async () => {
  const id = opensslKekId('pub.pem');
  assert.match(read('rsapub.pem'), /BEGIN RSA PUBLIC KEY/);
  assert.equal(await kekId(read('rsapub.pem')), id);
  assert.match(read('cert.pem'), /BEGIN CERTIFICATE/);
  assert.equal(await kekId(read('cert.pem')), id);
  assert.equal(await kekId(`subject=CN = k\r\n${read('cert.pem').replaceAll('\n', '\r\n')}`), id);
});

test('other PBES2 PRFs and AES-128 open', async () => {
  const expect = { 'aes128-sha1.pem': ['sha1', 'aes-128-cbc'], 'aes256-sha384.pem': ['sha384', 'aes-256-cbc'], 'aes256-sha512.pem': ['sha512', 'aes-256-cbc'] };
  for (const [file, [prf, cipher]] of Object.entries(expect)) {
    const k = classifyPrivateKey(read(file));
    assert.deepEqual([k.form, k.prf, k.cipher], ['pkcs8-pbes2', prf, cipher], file);
    const key = await openPrivateKey(read(file), PASS);
    assertOpenable(key);
    await assertPair(key, 'pub.pem');
  }
});

test('unencrypted PKCS#8 (genrsa 2048) and PKCS#1 (rsa -traditional) open without a passphrase', async () => {
  assert.match(read('plain.pem'), /BEGIN PRIVATE KEY/);
  assert.match(read('plain-trad.pem'), /BEGIN RSA PRIVATE KEY/);
  assert.equal(classifyPrivateKey(read('plain.pem')).form, 'pkcs8-plain');
  assert.equal(classifyPrivateKey(read('plain-trad.pem')).form, 'pkcs1-plain');
  for (const file of ['plain.pem', 'plain-trad.pem']) {
    const key = await openPrivateKey(read(file));
    assertOpenable(key);
    await assertPair(key, 'plain-pub.pem');
  }
  // The PKCS#1 → PKCS#8 wrapping equals openssl's.
  const p8 = openssl('pkcs8', '-topk8', '-nocrypt', '-in', 'plain-trad.pem', '-outform', 'der');
  assert.equal(toHex(classifyPrivateKey(read('plain-trad.pem')).der), p8.toString('hex'));
});

const UNSUPPORTED = {
  'trad-aes.pem': ['traditional-encrypted', 'traditional OpenSSL 1.x form (Proc-Type, AES-256-CBC)'],
  'trad-des3.pem': ['traditional-encrypted', 'traditional OpenSSL 1.x form (Proc-Type, DES-EDE3-CBC)'],
  'aes192.pem': ['pkcs8-pbes2-aes-192-cbc', 'PKCS#8 PBES2 form with AES-192-CBC'],
  'scrypt.pem': ['pkcs8-pbes2-scrypt', 'PKCS#8 PBES2 form with scrypt key derivation'],
  'des3.pem': ['pkcs8-pbes2-des-ede3-cbc', 'PKCS#8 PBES2 form with DES-EDE3-CBC'],
  'pbes1.pem': ['pkcs8-pbes1', 'PKCS#8 PBES1 form (pbeWithSHAAnd3-KeyTripleDES-CBC)'],
  'sha224.pem': ['pkcs8-pbes2-unsupported', 'PKCS#8 PBES2 form with PRF hmacWithSHA224'],
};

function formError(file) {
  try {
    classifyPrivateKey(read(file));
  } catch (err) {
    assert.ok(err instanceof KeyFormError, `${file}: ${err}`);
    return err;
  }
  assert.fail(`${file} was accepted`);
}

test('forms WebCrypto cannot open give KeyFormError naming the form and the commands', async () => {
  for (const [file, [form, description]] of Object.entries(UNSUPPORTED)) {
    const err = formError(file);
    assert.equal(err.form, form, file);
    assert.ok(err.message.includes(description), `${file}: ${err.message}`);
    assert.ok(err.message.includes('openssl pkcs8 -topk8 -v2 aes-256-cbc -v2prf hmacWithSHA256 -in keypair.pem -out keypair-pkcs8.pem'));
    assert.ok(err.message.includes(CONVERT_COMMAND));
    await assert.rejects(openPrivateKey(read(file), PASS), KeyFormError);
  }
});

test('the re-encryption command in the message works, and its output opens', async () => {
  for (const file of Object.keys(UNSUPPORTED)) {
    const command = /openssl (pkcs8 [^\n]*)/.exec(formError(file).message)[1].split(' ');
    const out = `fixed-${file}`;
    const args = command.map((a) => (a === 'keypair.pem' ? file : a === 'keypair-pkcs8.pem' ? out : a));
    openssl(...args, ...pass);
    const k = classifyPrivateKey(read(out));
    assert.deepEqual([k.form, k.prf, k.cipher], ['pkcs8-pbes2', 'sha256', 'aes-256-cbc']);
    const key = await openPrivateKey(read(out), PASS);
    assertOpenable(key);
    await assertPair(key, file === 'trad-aes.pem' ? 'trad-aes-pub.pem' : 'pub.pem');
  }
});

test('EC and Ed25519 keys are refused as not RSA, encrypted or not', async () => {
  for (const file of ['ec.pem', 'ec-trad.pem', 'ed25519.pem']) {
    const err = formError(file);
    assert.equal(err.form, 'non-rsa', file);
    assert.match(err.message, /sealstream KEKs are RSA/);
  }
  assert.match(formError('ec-trad.pem').message, /type EC/);
  assert.match(formError('ed25519.pem').message, /type Ed25519/);
  // An encrypted PKCS#8 EC key looks like any other until it is decrypted.
  assert.equal(classifyPrivateKey(read('ec-enc.pem')).form, 'pkcs8-pbes2');
  await assert.rejects(openPrivateKey(read('ec-enc.pem'), PASS), (e) => e instanceof KeyFormError && e.form === 'non-rsa');
  await assert.rejects(openPrivateKey(read('ec-enc.pem'), 'wrong'), WrongPassphraseError);
  await assert.rejects(kekId(read('ec-pub.pem')), (e) => e instanceof KeyFormError && e.form === 'non-rsa');
});

test('garbage and public keys are not PEM private keys', async () => {
  for (const text of ['', 'hello', 'garbage\n-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n', read('pub.pem'), read('cert.pem')]) {
    assert.throws(() => classifyPrivateKey(text), (e) => e instanceof KeyFormError && e.form === 'not-pem-private-key'
      && /not a PEM private key/.test(e.message));
  }
  assert.throws(() => classifyPrivateKey('-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n'),
    (e) => e instanceof KeyFormError && e.form === 'malformed');
  await assert.rejects(kekId(read('enc.pem')), (e) => e instanceof KeyFormError && e.form === 'not-pem-public-key');
});

test('the passphrase is its UTF-8 bytes, not normalized', async () => {
  const nfd = 'cafe\u0301';
  openssl('pkcs8', '-topk8', '-v2', 'aes-256-cbc', '-v2prf', 'hmacWithSHA256', '-in', 'enc.pem', '-passin', `pass:${PASS}`,
    '-passout', `pass:${nfd}`, '-out', 'nfd.pem');
  assertOpenable(await openPrivateKey(read('nfd.pem'), nfd));
  await assert.rejects(openPrivateKey(read('nfd.pem'), nfd.normalize('NFC')), WrongPassphraseError);
});

test('an OpenSSH key is refused with the ssh-keygen command that rewrites it, which works', async (t) => {
  try {
    execFileSync('ssh-keygen', ['-q', '-t', 'rsa', '-b', '2048', '-N', 'xxxxx', '-f', path('ssh')], { stdio: 'pipe' });
  } catch {
    t.skip('no ssh-keygen');
    return;
  }
  const err = formError('ssh');
  assert.equal(err.form, 'openssh');
  const command = /`(ssh-keygen [^`]*)`/.exec(err.message)[1].split(' ');
  assert.deepEqual(command, ['ssh-keygen', '-p', '-m', 'PKCS8', '-f', 'keypair-copy']);
  execFileSync('ssh-keygen', [...command.slice(1, -1), path('ssh'), '-P', 'xxxxx', '-N', 'xxxxx'], { stdio: 'pipe' });
  assertOpenable(await openPrivateKey(read('ssh'), 'xxxxx'));
});
