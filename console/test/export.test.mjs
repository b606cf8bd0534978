// The browser's video export: MediaRecorder's WebM has no duration; `withWebmDuration` adds
// one to the Segment Info and moves what follows (and the SeekHead's positions) with it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withWebmDuration } from '../assets/js/export.js';

const bytes = (...parts) => Uint8Array.from(parts.flat());
const EBML_HEADER = [0x1a, 0x45, 0xdf, 0xa3, 0x84, 0x42, 0x86, 0x81, 0x01];
const UNKNOWN = [0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
// Info: TimecodeScale 1,000,000 and MuxingApp "Chrome", as Chromium writes it.
const INFO = [0x15, 0x49, 0xa9, 0x66, 0x8d, 0x2a, 0xd7, 0xb1, 0x83, 0x0f, 0x42, 0x40, 0x4d, 0x80, 0x86, ...Buffer.from('Chrome')];
const CLUSTER = [0x1f, 0x43, 0xb6, 0x75, 0x83, 0xe7, 0x81, 0x00];

/** The Duration (ms) in `webm`'s Info, and the offset of the Cluster. */
function read(webm) {
  const at = Buffer.from(webm).indexOf(Buffer.from([0x44, 0x89, 0x88]));
  const cluster = Buffer.from(webm).indexOf(Buffer.from(CLUSTER.slice(0, 4)));
  return { duration: at < 0 ? null : new DataView(webm.buffer, webm.byteOffset + at + 3, 8).getFloat64(0), cluster };
}

test('a WebM without a duration gets one, and the clusters after it are kept whole', () => {
  const webm = bytes(EBML_HEADER, 0x18, 0x53, 0x80, 0x67, UNKNOWN, INFO, CLUSTER);
  assert.equal(read(webm).duration, null);
  const out = withWebmDuration(webm, 4321.5);
  assert.equal(read(out).duration, 4321.5);
  assert.deepEqual([...out.subarray(read(out).cluster)], CLUSTER);
  // Info now says how long it is: its 8-byte size covers its fields and the Duration.
  const info = Buffer.from(out).indexOf(Buffer.from(INFO.slice(0, 4)));
  assert.equal(out[info + 4], 0x01);
  assert.equal(new DataView(out.buffer, info + 5, 7).getUint8(6), INFO.length - 5 + 11);
  // Set again: one Duration, the new one.
  const twice = withWebmDuration(out, 10);
  assert.equal(read(twice).duration, 10);
  assert.equal(twice.length, out.length);
});

test('SeekHead positions past the Info move with it; a known Segment size grows', () => {
  // SeekHead (one Seek: ID Cluster, position of the Cluster from the Segment's data start).
  // SeekHead: 5 bytes of header, then one Seek of 17 bytes.
  const clusterPos = 5 + 17 + INFO.length;
  const seek = [0x4d, 0xbb, 0x8e, 0x53, 0xab, 0x84, 0x1f, 0x43, 0xb6, 0x75, 0x53, 0xac, 0x84, 0, 0, 0, clusterPos];
  const head = [0x11, 0x4d, 0x9b, 0x74, 0x80 | seek.length, ...seek];
  assert.equal(head.length, 5 + 17);
  const body = [...head, ...INFO, ...CLUSTER];
  const size8 = [0x01, 0, 0, 0, 0, 0, 0, body.length];
  const webm = bytes(EBML_HEADER, 0x18, 0x53, 0x80, 0x67, size8, body);
  const out = withWebmDuration(webm, 1000);
  const delta = out.length - webm.length;
  assert.ok(delta > 0);
  const posAt = EBML_HEADER.length + 12 + head.length - 4;
  assert.equal(new DataView(out.buffer).getUint32(posAt), clusterPos + delta);
  const segData = EBML_HEADER.length + 12;
  assert.deepEqual([...out.subarray(segData + clusterPos + delta, segData + clusterPos + delta + 4)], CLUSTER.slice(0, 4));
  assert.equal(out[EBML_HEADER.length + 4 + 7], body.length + delta);
});

test('what is not a WebM is returned as it was', () => {
  const junk = Uint8Array.from([1, 2, 3, 4, 5]);
  assert.equal(withWebmDuration(junk, 5), junk);
});
