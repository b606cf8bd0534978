//! Per-stream envelope rules, sans-IO: contiguous sequence numbers, identical duplicates acked
//! again, different bytes under a seen number refused, nothing after the final chunk.

use std::collections::BTreeMap;

use crate::protocol::Kind;
use crate::protocol::uplink::Reject;

/// Recent chunk digests kept per stream in memory (older ones are asked of the database).
pub const RECENT: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    /// Accepted, not yet durable.
    Pending([u8; 32]),
    Stored([u8; 32]),
}

/// What to do with a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// New: store it.
    Accept,
    /// The same bytes are already stored: ack again, store nothing.
    Duplicate,
    /// Below the next number but not remembered here: look up the stored digest.
    AskStored,
    Reject(Reject),
}

#[derive(Clone, Debug)]
pub struct StreamState {
    kind: Kind,
    next_seq: u64,
    final_seq: Option<u64>,
    recent: BTreeMap<u64, Entry>,
    /// Ranges gap records skipped (first, last), newest last; at most `SKIPPED` kept.
    skipped: Vec<(u64, u64)>,
}

/// Gap-record ranges remembered per stream (an agent makes one per spool overflow).
pub const SKIPPED: usize = 64;

impl StreamState {
    pub fn new(kind: Kind) -> Self {
        Self::resume(kind, 0, None, Vec::new())
    }

    /// A stream known from the database, with the ranges its stored gap records dropped
    /// (oldest first), so that a number in them stays refused after a reconnect or a restart.
    pub fn resume(
        kind: Kind,
        next_seq: u64,
        final_seq: Option<u64>,
        mut dropped: Vec<(u64, u64)>,
    ) -> Self {
        if dropped.len() > SKIPPED {
            dropped.drain(..dropped.len() - SKIPPED);
        }
        StreamState {
            kind,
            next_seq,
            final_seq,
            recent: BTreeMap::new(),
            skipped: dropped,
        }
    }

    /// The first number the gap record just accepted at `seq` dropped (what its index row
    /// keeps, so the range outlives this connection).
    pub fn dropped_before(&self, seq: u64) -> Option<u64> {
        self.skipped
            .last()
            .filter(|(_, b)| b.checked_add(1) == Some(seq))
            .map(|(a, _)| *a)
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn check(&mut self, kind: Kind, seq: u64, last: bool, digest: [u8; 32]) -> Verdict {
        self.check_chunk(kind, seq, last, false, digest)
    }

    /// `check` for any chunk: a gap record (`gap`) may skip ahead, since the agent declares
    /// (under its key) that the numbers in between were dropped.
    pub fn check_chunk(
        &mut self,
        kind: Kind,
        seq: u64,
        last: bool,
        gap: bool,
        digest: [u8; 32],
    ) -> Verdict {
        if kind != self.kind {
            return Verdict::Reject(Reject::StreamMismatch);
        }
        if seq < self.next_seq {
            if self.skipped.iter().any(|(a, b)| (*a..=*b).contains(&seq)) {
                return Verdict::Reject(Reject::DeclaredDropped);
            }
            return match self.recent.get(&seq) {
                Some(Entry::Stored(d)) if *d == digest => Verdict::Duplicate,
                Some(Entry::Pending(d)) if *d == digest => Verdict::Reject(Reject::InProgress),
                Some(_) => Verdict::Reject(Reject::ConflictingDuplicate),
                None => Verdict::AskStored,
            };
        }
        if self.final_seq.is_some() {
            return Verdict::Reject(Reject::AfterFinal);
        }
        if seq > self.next_seq && !gap {
            return Verdict::Reject(Reject::SequenceGap);
        }
        // 2^64 - 1 is the last number a stream has: nothing could follow it, and a stream
        // that wrapped to 0 would take different bytes under numbers it already holds.
        let Some(next) = seq.checked_add(1) else {
            return Verdict::Reject(Reject::SequenceExhausted);
        };
        if seq > self.next_seq {
            // A gap record: the numbers it skips were dropped by the agent, for good.
            self.skipped.push((self.next_seq, seq - 1));
            if self.skipped.len() > SKIPPED {
                self.skipped.remove(0);
            }
        }
        self.next_seq = next;
        if last {
            self.final_seq = Some(seq);
        }
        self.remember(seq, Entry::Pending(digest));
        Verdict::Accept
    }

    /// The answer to `AskStored`: the digest stored under `seq`, if any.
    pub fn resolve(
        &mut self,
        seq: u64,
        last: bool,
        digest: [u8; 32],
        stored: Option<[u8; 32]>,
    ) -> Verdict {
        match stored {
            Some(d) if d == digest => {
                self.remember(seq, Entry::Stored(d));
                Verdict::Duplicate
            }
            Some(_) => Verdict::Reject(Reject::ConflictingDuplicate),
            // A number below next_seq that was never stored: its first write failed and the
            // agent is resending it. Fill the hole.
            None => {
                if last {
                    self.final_seq.get_or_insert(seq);
                }
                self.remember(seq, Entry::Pending(digest));
                Verdict::Accept
            }
        }
    }

    /// The store's answer for an accepted chunk.
    pub fn settle(&mut self, seq: u64, stored: bool) {
        match self.recent.get(&seq).copied() {
            Some(Entry::Pending(d)) if stored => {
                self.recent.insert(seq, Entry::Stored(d));
            }
            Some(Entry::Pending(_)) => {
                // Not stored: forget it so the resend is accepted; a final flag it set goes too.
                self.recent.remove(&seq);
                if self.final_seq == Some(seq) {
                    self.final_seq = None;
                }
                if seq.checked_add(1) == Some(self.next_seq) {
                    self.next_seq = seq;
                    // A gap record that was not stored will come again: so will its skip.
                    if self
                        .skipped
                        .last()
                        .is_some_and(|(_, b)| b.checked_add(1) == Some(seq))
                    {
                        let (a, _) = self.skipped.pop().expect("checked");
                        self.next_seq = a;
                    }
                }
            }
            _ => {}
        }
    }

    fn remember(&mut self, seq: u64, entry: Entry) {
        self.recent.insert(seq, entry);
        while self.recent.len() > RECENT {
            // Drop the oldest stored entry; pending ones are kept until settled.
            let Some(old) = self
                .recent
                .iter()
                .find(|(_, e)| matches!(e, Entry::Stored(_)))
                .map(|(s, _)| *s)
            else {
                break;
            };
            self.recent.remove(&old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: [u8; 32] = [1; 32];
    const B: [u8; 32] = [2; 32];

    #[test]
    fn contiguous_chunks_are_accepted_and_gaps_refused() {
        let mut s = StreamState::new(Kind::Frame);
        assert_eq!(s.check(Kind::Frame, 0, false, A), Verdict::Accept);
        assert_eq!(
            s.check(Kind::Frame, 2, false, A),
            Verdict::Reject(Reject::SequenceGap)
        );
        assert_eq!(
            s.check(Kind::Keystrokes, 1, false, A),
            Verdict::Reject(Reject::StreamMismatch)
        );
        assert_eq!(s.check(Kind::Frame, 1, true, B), Verdict::Accept);
        assert_eq!(
            s.check(Kind::Frame, 2, false, A),
            Verdict::Reject(Reject::AfterFinal)
        );
    }

    #[test]
    fn a_gap_record_may_skip_ahead_and_nothing_else_may() {
        let mut s = StreamState::new(Kind::Frame);
        assert_eq!(s.check(Kind::Frame, 0, false, A), Verdict::Accept);
        assert_eq!(
            s.check_chunk(Kind::Frame, 5, false, false, A),
            Verdict::Reject(Reject::SequenceGap)
        );
        assert_eq!(
            s.check_chunk(Kind::Frame, 5, false, true, B),
            Verdict::Accept
        );
        assert_eq!(s.check(Kind::Frame, 6, false, A), Verdict::Accept);
        // Inside the range the gap record skipped: dropped for good (it was AskStored, and
        // then accepted as a hole to fill, before).
        assert_eq!(
            s.check(Kind::Frame, 3, false, A),
            Verdict::Reject(Reject::DeclaredDropped)
        );
    }

    #[test]
    fn a_dropped_range_stays_refused_in_a_stream_resumed_from_the_database() {
        let mut s = StreamState::new(Kind::Frame);
        assert_eq!(s.check(Kind::Frame, 0, false, A), Verdict::Accept);
        let gap = 1 << 63;
        assert_eq!(
            s.check_chunk(Kind::Frame, gap, false, true, B),
            Verdict::Accept
        );
        assert_eq!(s.dropped_before(gap), Some(1));
        assert_eq!(s.dropped_before(gap + 1), None);
        // What the index keeps: the gap record's row at `gap` remembers it dropped from 1.
        let mut resumed = StreamState::resume(Kind::Frame, gap + 1, None, vec![(1, gap - 1)]);
        assert_eq!(
            resumed.check(Kind::Frame, 1, false, A),
            Verdict::Reject(Reject::DeclaredDropped)
        );
        // Without it the number looks like a hole to fill.
        let mut forgetful = StreamState::resume(Kind::Frame, gap + 1, None, Vec::new());
        assert_eq!(
            forgetful.check(Kind::Frame, 1, false, A),
            Verdict::AskStored
        );
    }

    #[test]
    fn duplicates_are_acked_once_stored_and_conflicts_refused() {
        let mut s = StreamState::new(Kind::Frame);
        assert_eq!(s.check(Kind::Frame, 0, false, A), Verdict::Accept);
        // Sent again while the first is being stored: its own code, not "storage down".
        assert_eq!(
            s.check(Kind::Frame, 0, false, A),
            Verdict::Reject(Reject::InProgress)
        );
        s.settle(0, true);
        assert_eq!(s.check(Kind::Frame, 0, false, A), Verdict::Duplicate);
        assert_eq!(
            s.check(Kind::Frame, 0, false, B),
            Verdict::Reject(Reject::ConflictingDuplicate)
        );
    }

    #[test]
    fn a_failed_store_lets_the_resend_in() {
        let mut s = StreamState::new(Kind::Frame);
        s.check(Kind::Frame, 0, false, A);
        s.check(Kind::Frame, 1, true, B);
        s.settle(0, true);
        s.settle(1, false);
        assert_eq!(s.check(Kind::Frame, 1, true, B), Verdict::Accept);
    }

    #[test]
    fn after_a_restart_old_numbers_are_looked_up() {
        let mut s = StreamState::resume(Kind::Frame, 10, None, Vec::new());
        assert_eq!(s.check(Kind::Frame, 3, false, A), Verdict::AskStored);
        assert_eq!(s.resolve(3, false, A, Some(A)), Verdict::Duplicate);
        assert_eq!(
            s.resolve(4, false, A, Some(B)),
            Verdict::Reject(Reject::ConflictingDuplicate)
        );
        assert_eq!(s.resolve(5, false, A, None), Verdict::Accept);
        assert_eq!(s.check(Kind::Frame, 10, false, A), Verdict::Accept);
    }

    proptest! {
        /// Whatever order and repetition chunks arrive in, the accepted ones are exactly
        /// 0..n, each once, when everything is stored as it is accepted.
        #[test]
        fn accepted_numbers_are_contiguous_and_unique(seqs in proptest::collection::vec(0u64..20, 0..200)) {
            let mut s = StreamState::new(Kind::Keystrokes);
            let mut accepted = Vec::new();
            for seq in seqs {
                let digest = [seq as u8; 32];
                if s.check(Kind::Keystrokes, seq, false, digest) == Verdict::Accept {
                    s.settle(seq, true);
                    accepted.push(seq);
                }
            }
            let expected: Vec<u64> = (0..accepted.len() as u64).collect();
            prop_assert_eq!(accepted, expected);
        }
    }

    #[test]
    fn a_stream_never_wraps_past_the_last_sequence_number() {
        // A gap record ending at 2^64 - 2 brings the stream to its last number; that number
        // itself is refused, and 0 is still a stored number, not a new one.
        let mut s = StreamState::new(Kind::Frame);
        assert_eq!(s.check(Kind::Frame, 0, false, A), Verdict::Accept);
        s.settle(0, true);
        assert_eq!(
            s.check_chunk(Kind::Frame, u64::MAX - 1, false, true, B),
            Verdict::Accept
        );
        assert_eq!(
            s.check_chunk(Kind::Frame, u64::MAX, false, true, B),
            Verdict::Reject(Reject::SequenceExhausted)
        );
        assert_eq!(
            s.check(Kind::Frame, 0, false, B),
            Verdict::Reject(Reject::ConflictingDuplicate)
        );
        let mut t = StreamState::new(Kind::Frame);
        assert_eq!(
            t.check_chunk(Kind::Frame, u64::MAX, true, true, A),
            Verdict::Reject(Reject::SequenceExhausted)
        );
    }

    #[test]
    fn a_chunk_inside_a_range_a_gap_record_dropped_is_refused() {
        let mut s = StreamState::new(Kind::Frame);
        assert_eq!(s.check(Kind::Frame, 0, false, A), Verdict::Accept);
        // Chunks 1..=4 dropped by the agent; the gap record is 5.
        assert_eq!(
            s.check_chunk(Kind::Frame, 5, false, true, B),
            Verdict::Accept
        );
        for seq in 1..=4 {
            assert_eq!(
                s.check(Kind::Frame, seq, false, A),
                Verdict::Reject(Reject::DeclaredDropped)
            );
        }
        // A gap record that was not stored takes its skip back with it.
        s.settle(5, false);
        assert_eq!(s.next_seq(), 1);
        assert_eq!(s.check(Kind::Frame, 1, false, A), Verdict::Accept);
    }
}
