//! `seal`: the agent's sealing pipeline (stream key, header/AAD, AES-256-GCM), alone and with
//! segment building (SHA-256), against bare AES-256-GCM over the same frames.

use std::time::{Duration, Instant};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use sealstream::crypto::Dek;
use sealstream::protocol::{AgentId, Kind, SealedChunk, Segment, SessionId, StreamId};

pub fn seal(
    frame_size: usize,
    total: usize,
    rounds: usize,
    json: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        frame_size > 0 && total >= frame_size && rounds > 0,
        "bad arguments"
    );
    let frames = total / frame_size;
    let frame: Vec<u8> = (0..frame_size).map(|i| (i * 31 % 251) as u8).collect();
    let dek = Dek::generate();
    // A signing agent (format version 2): its enrolment key from a throwaway agent CA.
    let pki_dir = tempfile::tempdir()?;
    let pki = sealstream::pki::Pki::open_or_create(pki_dir.path())?;
    let (cert, key) = pki.issue_agent(&AgentId::new("loadtest-agent").expect("valid"))?;
    let signer = std::sync::Arc::new(
        sealstream::crypto::AgentSigner::from_pem(&cert, &key).map_err(anyhow::Error::msg)?,
    );
    let (mut base, mut agent, mut store, mut signed) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        base.push(baseline(&frame, frames));
        agent.push(pipeline(&dek, &frame, frames, false, None));
        store.push(pipeline(&dek, &frame, frames, true, None));
        signed.push(pipeline(&dek, &frame, frames, false, Some(&signer)));
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (b, a, st, sg) = (
        median(&mut base),
        median(&mut agent),
        median(&mut store),
        median(&mut signed),
    );
    let mbps = |d: Duration| (frames * frame_size) as f64 / d.as_secs_f64() / 1e6;
    let ratio = |d: Duration| b.as_secs_f64() / d.as_secs_f64();
    println!(
        "frames {frames} x {frame_size} B, {rounds} rounds (median)\n  \
         baseline AES-256-GCM:             {:8.1} MB/s\n  \
         agent sealing (chunks):           {:8.1} MB/s  ratio {:.3}\n  \
         sealing + 8 MiB segments (SHA-256): {:6.1} MB/s  ratio {:.3}\n  \
         signed sealing (chain + checkpoints every 64): {:6.1} MB/s  ratio {:.3} (to unsigned sealing {:.3})",
        mbps(b),
        mbps(a),
        ratio(a),
        mbps(st),
        ratio(st),
        mbps(sg),
        ratio(sg),
        a.as_secs_f64() / sg.as_secs_f64()
    );
    if let Some(path) = json {
        let doc = serde_json::json!({
            "benchmark": "seal",
            "frame_size": frame_size,
            "frames": frames,
            "rounds": rounds,
            "baseline_mb_s": mbps(b),
            "agent_sealing_mb_s": mbps(a),
            "agent_sealing_ratio": ratio(a),
            "with_segments_mb_s": mbps(st),
            "with_segments_ratio": ratio(st),
            "signed_sealing_mb_s": mbps(sg),
            "signed_sealing_ratio": ratio(sg),
            "signed_to_unsigned_ratio": a.as_secs_f64() / sg.as_secs_f64(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
    }
    Ok(())
}

/// Bare AES-256-GCM over the frames, nonce from a counter: the cost floor.
fn baseline(frame: &[u8], frames: usize) -> Duration {
    // ring's, as the agent's sealing uses (crypto::seal).
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7u8; 32]).expect("32-byte key"));
    let start = Instant::now();
    let mut sink = 0usize;
    for i in 0..frames {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&(i as u64).to_be_bytes());
        let mut ct = frame.to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(n), Aad::empty(), &mut ct)
            .expect("encrypts");
        sink = sink.wrapping_add(ct.len());
    }
    std::hint::black_box(sink);
    start.elapsed()
}

/// What the agent does per frame: seal with header AAD (with `signer`, also the stream's hash
/// chain and a signed checkpoint every 64 chunks); with `segments`, also what the store side
/// does: batch into 8 MiB segment objects with their SHA-256.
fn pipeline(
    dek: &Dek,
    frame: &[u8],
    frames: usize,
    segments: bool,
    signer: Option<&std::sync::Arc<sealstream::crypto::AgentSigner>>,
) -> Duration {
    let agent = AgentId::new("loadtest-agent").expect("valid");
    let start = Instant::now();
    let sealer = sealstream::crypto::StreamSealer::new(
        dek,
        agent,
        SessionId::random(),
        StreamId(0),
        Kind::Frame,
    );
    let mut sealer = match signer {
        Some(s) => sealer.signed_by(s.clone(), sealstream::crypto::Checkpoints::default()),
        None => sealer,
    };
    let mut batch: Vec<SealedChunk> = Vec::new();
    let mut batched = 0usize;
    let mut sink = 0usize;
    for i in 0..frames {
        let c = sealer
            .seal(frame, 0, i + 1 == frames)
            .expect("within limits");
        if !segments {
            sink = sink.wrapping_add(c.len());
            continue;
        }
        batched += c.len();
        batch.push(c);
        if batched >= sealstream::recorder::SEGMENT_TARGET_BYTES || i + 1 == frames {
            let (bytes, _) = Segment::encode(Segment::new_id(0), 0, &batch);
            sink = sink.wrapping_add(bytes.len());
            batch.clear();
            batched = 0;
        }
    }
    std::hint::black_box(sink);
    start.elapsed()
}
