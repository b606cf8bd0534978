//! The server's background store verify (`verify_interval_ms`): `inspect::verify` run on a
//! timer, its outcome exported as metrics. (The verify itself is keyless and IO-only; the loop
//! and the metric names are the server's.)

/// `serve` with `verify_interval_ms`: verify the store every `every` and export the outcome:
/// `sealstream_store_verify_streams{verdict}`, `sealstream_store_verify_damaged_objects`,
/// `sealstream_store_verify_bytes`, `sealstream_store_verify_seconds` and
/// `sealstream_store_verify_last_run_timestamp_seconds` (0 until a run finishes; a store that
/// cannot be read leaves the last figures and logs why).
pub async fn verify_in_background(
    store: std::sync::Arc<dyn object_store::ObjectStore>,
    ca: crate::crypto::AgentCa,
    every: std::time::Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let started = std::time::Instant::now();
        match crate::inspect::verify(store.as_ref(), Some(&ca), |_| {}).await {
            Ok(report) => {
                // The verdicts a keyless reader gives (not no_key and malformed).
                for v in [
                    crate::inspect::Verdict::Tampered,
                    crate::inspect::Verdict::NoDekRecord,
                    crate::inspect::Verdict::Unsigned,
                    crate::inspect::Verdict::Incomplete,
                    crate::inspect::Verdict::Unproven,
                    crate::inspect::Verdict::Ok,
                ] {
                    let n = report.streams.iter().filter(|s| s.verdict == v).count();
                    ::metrics::gauge!(super::metrics::VERIFY_STREAMS, "verdict" => v.name())
                        .set(n as f64);
                }
                ::metrics::gauge!(super::metrics::VERIFY_DAMAGED)
                    .set(report.damaged_objects.len() as f64);
                ::metrics::gauge!(super::metrics::VERIFY_BYTES).set(report.segment_bytes as f64);
                ::metrics::gauge!(super::metrics::VERIFY_SECONDS)
                    .set(started.elapsed().as_secs_f64());
                ::metrics::gauge!(super::metrics::VERIFY_LAST_RUN)
                    .set(crate::crypto::now_us() as f64 / 1e6);
                if report.outcome == crate::inspect::Verdict::Tampered {
                    tracing::error!(
                        damaged = report.damaged_objects.len(),
                        "background verify: the store was altered or corrupted; run `sealstream verify` for the details"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "background verify: cannot read the store"),
        }
    }
}
