// A fake console server for the page's own modules (session.js → api.js → fetch): it answers
// the API paths api.js calls, the way src/console/api.rs shapes them, from a store of sealed
// chunks (the vectors' by default). It only serves bytes; every check is the page's. A test may
// replace the chunk endpoint's answer (`serve`) to play a server that answers with another
// chunk than the one asked for.

import { parseChunk } from '../assets/js/chunk.js';
import { concat, fromHex, toHex } from '../assets/js/hex.js';
import { kekPem, kekPublicPem, vectors } from './helpers.mjs';

/** The vectors' sealed chunks of `stream` (all streams when null), as bytes. */
export function vectorChunks(stream = null) {
  return vectors.chunks.filter((c) => stream === null || c.stream === stream).map((c) => fromHex(c.sealed));
}

function json(value, status = 200) {
  return new Response(JSON.stringify(value), { status, headers: { 'Content-Type': 'application/json' } });
}

function notFound(path) {
  return json({ error: `not found: ${path}` }, 404);
}

/**
 * Install a fake `globalThis.fetch` serving `stored` (sealed chunks, each indexed by its own
 * header) until `t` ends. `serve(stream, fromSeq, count, honest)` gives the chunk endpoint's
 * answer as a list of chunks; `honest(stream, fromSeq, count)` is what an honest server answers
 * (the stored chunks `fromSeq .. fromSeq + count` of `stream`), and the default. Returns {summary, requests}: the session's summary (as `GET .../sessions/{id}`
 * answers it, what the page builds a Recording from) and the paths the page asked for.
 */
export function fakeConsole(t, stored = vectorChunks(), { serve } = {}) {
  const chunks = stored.map((bytes) => parseChunk(bytes));
  const first = chunks[0];
  const agentHex = toHex(first.agentBytes);
  const session = toHex(first.sessionId);
  const streams = [...new Map(chunks.map((c) => [c.streamId, c.kind])).entries()].map(([stream, kind]) => {
    const mine = chunks.filter((c) => c.streamId === stream);
    const final = mine.find((c) => c.final);
    return {
      stream,
      kind,
      next_seq: Math.max(...mine.map((c) => Number(c.seq))) + 1,
      final_seq: final ? Number(final.seq) : null,
    };
  });
  const summary = {
    agent: first.agent,
    agent_hex: agentHex,
    session,
    first_capture_us: Math.min(...chunks.map((c) => Number(c.captureUs))),
    last_capture_us: Math.max(...chunks.map((c) => Number(c.captureUs))),
    chunks: chunks.length,
    bytes: stored.reduce((n, b) => n + b.length, 0),
    gaps: 0,
    state: streams.every((s) => s.final_seq !== null) ? 'complete' : 'incomplete',
    encrypted: true,
    streams,
  };
  const storedOf = (stream, fromSeq, count) => chunks
    .filter((c) => c.streamId === stream && c.seq >= BigInt(fromSeq) && c.seq < BigInt(fromSeq + count))
    .sort((a, b) => (a.seq < b.seq ? -1 : 1))
    .map((c) => c.bytes);
  const answer = serve ?? storedOf;
  const requests = [];
  const base = `/api/agents/${agentHex}/sessions/${session}`;

  const fetch = async (input, init = {}) => {
    const url = new URL(String(input), 'https://console.invalid');
    const path = url.pathname;
    const q = url.searchParams;
    requests.push(`${init.method ?? 'GET'} ${path}${url.search}`);
    if ((init.method ?? 'GET') !== 'GET') return json({ error: 'method not allowed' }, 405);
    if (path === base) return json(summary);
    if (path === `${base}/index`) {
      const stream = q.has('stream') ? Number(q.get('stream')) : null;
      const fromSeq = BigInt(q.get('from_seq') ?? '0');
      const rows = chunks
        .filter((c) => (stream === null || c.streamId === stream) && c.seq >= fromSeq)
        .sort((a, b) => a.streamId - b.streamId || (a.seq < b.seq ? -1 : 1))
        .map((c) => ({
          stream: c.streamId, seq: Number(c.seq), capture_us: Number(c.captureUs), flags: c.flags,
          dek_id: toHex(c.dekId), len: c.length,
        }));
      return json({ chunks: rows, more: false });
    }
    const m = new RegExp(`^${base}/streams/(\\d+)/chunks$`).exec(path);
    if (m) {
      const list = answer(Number(m[1]), Number(q.get('from_seq')), Number(q.get('count')), storedOf);
      if (list.length === 0) return json({ error: 'no such chunks' }, 404);
      const last = parseChunk(list[list.length - 1]).seq;
      return new Response(concat(...list), {
        headers: { 'Content-Type': 'application/octet-stream', 'X-Sealstream-Last-Seq': String(last) },
      });
    }
    if (path === `/api/deks/${vectors.dek_id}`) {
      return new Response(fromHex(vectors.dek_record), { headers: { 'Content-Type': 'application/octet-stream' } });
    }
    if (path === '/api/keks') {
      return json([{ kek_id: vectors.kek_id, priv_encrypted: true, active: true, private_file: true }]);
    }
    const kek = /^\/api\/keks\/([^/]+)\/(public|private)$/.exec(path);
    if (kek && decodeURIComponent(kek[1]) === vectors.kek_id) {
      return new Response(kek[2] === 'public' ? kekPublicPem : kekPem, { headers: { 'Content-Type': 'application/x-pem-file' } });
    }
    return notFound(path);
  };

  const before = globalThis.fetch;
  globalThis.fetch = fetch;
  t.after(() => {
    globalThis.fetch = before;
  });
  return { summary, requests };
}
