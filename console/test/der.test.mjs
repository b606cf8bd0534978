// DER reader and PEM decoding.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DerError, DerReader, TAG, encodeOid, encodeTlv, oidToString, pemBlocks, pemHeader, readTlv } from '../assets/js/der.js';
import { fromHex, toHex, utf8 } from '../assets/js/hex.js';
import { kekPem } from '../test-support/helpers.mjs';

test('pemBlocks tolerates CRLF, indentation and surrounding text', () => {
  const crlf = `Bag Attributes\r\n  friendlyName: x\r\n${kekPem.replaceAll('\n', '\r\n')}trailing text\r\n`;
  const [lf] = pemBlocks(kekPem);
  const blocks = pemBlocks(crlf);
  assert.equal(blocks.length, 1);
  assert.equal(blocks[0].label, 'ENCRYPTED PRIVATE KEY');
  assert.deepEqual(blocks[0].der, lf.der);
  assert.deepEqual(pemBlocks('no pem here'), []);
  assert.deepEqual(pemBlocks(''), []);
});

test('pemBlocks keeps RFC 1421 headers and reads several blocks', () => {
  const text = [
    '-----BEGIN RSA PRIVATE KEY-----', 'Proc-Type: 4,ENCRYPTED', 'DEK-Info: AES-256-CBC,00FF', '',
    'AAEC', 'Aw==', '-----END RSA PRIVATE KEY-----', 'junk',
    '-----BEGIN CERTIFICATE-----', 'BQA=', '-----END CERTIFICATE-----',
  ].join('\n');
  const [a, b] = pemBlocks(text);
  assert.deepEqual(a.headers, { 'Proc-Type': '4,ENCRYPTED', 'DEK-Info': 'AES-256-CBC,00FF' });
  assert.equal(pemHeader(a, 'dek-info'), 'AES-256-CBC,00FF');
  assert.equal(pemHeader(b, 'Proc-Type'), undefined);
  assert.deepEqual(a.der, new Uint8Array([0, 1, 2, 3]));
  assert.deepEqual(b.der, new Uint8Array([5, 0]));
});

test('pemBlocks refuses broken blocks', () => {
  assert.throws(() => pemBlocks('-----BEGIN X-----\nAAAA\n'), /no END line/);
  assert.throws(() => pemBlocks('-----BEGIN X-----\nAA*A\n-----END X-----\n'), /not valid base64/);
  assert.throws(() => pemBlocks('-----BEGIN X-----\nAAA\n-----END X-----\n'), /not valid base64/);
  assert.throws(() => pemBlocks('-----BEGIN X-----\nAAAA\n-----END Y-----\n'), DerError);
});

test('readTlv is bounds-checked and strict', () => {
  assert.deepEqual(readTlv(fromHex('0403aabbcc')).value, fromHex('aabbcc'));
  assert.throws(() => readTlv(fromHex('04')), /truncated/);
  assert.throws(() => readTlv(fromHex('0404aabbcc')), /runs past the end/);
  assert.throws(() => readTlv(fromHex('3080')), /indefinite/);
  assert.throws(() => readTlv(fromHex('04810100')), /non-minimal length/);
  assert.throws(() => readTlv(fromHex('0482000100')), /non-minimal length/);
  assert.throws(() => readTlv(fromHex('0485ffffffffff')), DerError);
  assert.throws(() => readTlv(fromHex('1f0100')), /high tag/);
  const long = encodeTlv(TAG.OCTET_STRING, new Uint8Array(300));
  assert.equal(toHex(long.subarray(0, 4)), '0482012c');
  assert.equal(readTlv(long).value.length, 300);
});

test('OIDs, INTEGERs, BIT STRINGs', () => {
  for (const oid of ['1.2.840.113549.1.1.1', '2.16.840.1.101.3.4.1.42', '1.3.101.112', '2.999.1']) {
    assert.equal(oidToString(readTlv(encodeOid(oid)).value), oid);
  }
  assert.equal(toHex(encodeOid('1.2.840.113549.1.1.1')), '06092a864886f70d010101');
  assert.throws(() => oidToString(fromHex('2a86')), /truncated OID/);
  assert.throws(() => oidToString(fromHex('2a8001')), /non-minimal/);
  const r = new DerReader(fromHex('020200800201ff02020800030200000500'));
  assert.deepEqual(r.integer(), fromHex('0080'));
  assert.deepEqual(r.integer(), fromHex('ff'));
  assert.equal(r.smallInteger(), 2048);
  assert.deepEqual(r.bitString(), fromHex('00'));
  r.null();
  assert.throws(() => r.next(), /missing/);
  r.finish();
  assert.throws(() => new DerReader(fromHex('02020001')).integer(), /non-minimal/);
  assert.throws(() => new DerReader(fromHex('03020100')).bitString(), /unused bits/);
  assert.throws(() => new DerReader(fromHex('0401ff')).integer(), /tag 0x4, expected 0x2/);
  assert.throws(() => new DerReader(fromHex('3000')).sequence().oid(), /missing/);
  assert.throws(() => new DerReader(utf8('0')).next(), /truncated/);
});
