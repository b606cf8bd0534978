//! SHA-256 of two messages at once. One SHA-256 is a chain of rounds, each waiting for the
//! last, so a core's SHA extensions (SHA-NI) sit idle between them; the rounds of a second,
//! independent message fill those gaps. Here that hashes 1.4–1.5 times as many bytes per
//! second as the `sha2` crate hashing one message after the other (docs/benchmarks.md,
//! "Export in one pass"), and export and verify spend most of their time hashing.
//!
//! The common full blocks go through the two-lane kernel; what is left of the longer message,
//! and each message's padding, through `sha2`'s own block function. Without SHA-NI (or off
//! x86-64), both are hashed by `sha2`.

use sha2::{Digest, Sha256};

/// SHA-256's initial state (FIPS 180-4, 5.3.3).
const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// The SHA-256 digests of `a` and of `b`.
pub fn digest_pair(a: &[u8], b: &[u8]) -> ([u8; 32], [u8; 32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("sha")
        && std::is_x86_feature_detected!("sse4.1")
        && std::is_x86_feature_detected!("ssse3")
    {
        let (blocks_a, _) = a.as_chunks::<64>();
        let (blocks_b, _) = b.as_chunks::<64>();
        let common = blocks_a.len().min(blocks_b.len());
        let (mut sa, mut sb) = (IV, IV);
        // SAFETY: the CPU has the features the kernel is compiled for (checked above).
        unsafe { x86::compress_x2([&mut sa, &mut sb], &blocks_a[..common], &blocks_b[..common]) };
        return (finish(sa, a, common), finish(sb, b, common));
    }
    (Sha256::digest(a).into(), Sha256::digest(b).into())
}

/// The SHA-256 digest of each message, two at a time.
pub fn digest_all<'a>(messages: impl IntoIterator<Item = &'a [u8]>) -> Vec<[u8; 32]> {
    let messages: Vec<&[u8]> = messages.into_iter().collect();
    let mut out = Vec::with_capacity(messages.len());
    for pair in messages.chunks(2) {
        match pair {
            [a, b] => {
                let (da, db) = digest_pair(a, b);
                out.extend([da, db]);
            }
            [a] => out.push(Sha256::digest(a).into()),
            _ => unreachable!("chunks of two"),
        }
    }
    out
}

/// The digest of `message`, whose first `done` blocks `state` has taken in.
fn finish(mut state: [u32; 8], message: &[u8], done: usize) -> [u8; 32] {
    let (blocks, rest) = message.as_chunks::<64>();
    sha2::block_api::compress256(&mut state, &blocks[done..]);
    // The padding: 0x80, zeros, and the message's length in bits, to a whole block or two.
    let mut tail = [0u8; 128];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let end = if rest.len() < 56 { 64 } else { 128 };
    tail[end - 8..end].copy_from_slice(&((message.len() as u64) * 8).to_be_bytes());
    let (tail_blocks, _) = tail[..end].as_chunks::<64>();
    sha2::block_api::compress256(&mut state, tail_blocks);
    let mut digest = [0u8; 32];
    for (out, word) in digest.chunks_exact_mut(4).zip(state) {
        out.copy_from_slice(&word.to_be_bytes());
    }
    digest
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;

    /// SHA-256's round constants (FIPS 180-4, 4.2.2).
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    type Lanes = [__m128i; 2];

    /// Rounds `4r .. 4r + 4` of both lanes, `w` their message words.
    #[inline]
    #[target_feature(enable = "sha,sse4.1,ssse3")]
    fn rounds4(r: usize, abef: &mut Lanes, cdgh: &mut Lanes, w: Lanes) {
        // SAFETY: r < 16, so the four words are within K.
        let k = unsafe { _mm_loadu_si128(K.as_ptr().add(4 * r).cast()) };
        let t = [_mm_add_epi32(w[0], k), _mm_add_epi32(w[1], k)];
        cdgh[0] = _mm_sha256rnds2_epu32(cdgh[0], abef[0], t[0]);
        cdgh[1] = _mm_sha256rnds2_epu32(cdgh[1], abef[1], t[1]);
        let t = [_mm_shuffle_epi32(t[0], 0x0E), _mm_shuffle_epi32(t[1], 0x0E)];
        abef[0] = _mm_sha256rnds2_epu32(abef[0], cdgh[0], t[0]);
        abef[1] = _mm_sha256rnds2_epu32(abef[1], cdgh[1], t[1]);
    }

    /// The next four message words of each lane, in place of `w[l][i]`.
    #[inline]
    #[target_feature(enable = "sha,sse4.1,ssse3")]
    fn schedule(w: &mut [[__m128i; 4]; 2], i: usize) -> Lanes {
        let mut next = [_mm_setzero_si128(); 2];
        for (lane, out) in w.iter_mut().zip(&mut next) {
            let (w0, w1, w2, w3) = (
                lane[i],
                lane[(i + 1) % 4],
                lane[(i + 2) % 4],
                lane[(i + 3) % 4],
            );
            let t = _mm_add_epi32(_mm_sha256msg1_epu32(w0, w1), _mm_alignr_epi8(w3, w2, 4));
            lane[i] = _mm_sha256msg2_epu32(t, w3);
            *out = lane[i];
        }
        next
    }

    /// Both states take in their blocks (as many in each), the two chains interleaved.
    #[target_feature(enable = "sha,sse4.1,ssse3")]
    pub(super) fn compress_x2(states: [&mut [u32; 8]; 2], a: &[[u8; 64]], b: &[[u8; 64]]) {
        assert_eq!(a.len(), b.len(), "the lanes take in as many blocks");
        let mut abef = [_mm_setzero_si128(); 2];
        let mut cdgh = [_mm_setzero_si128(); 2];
        for (l, state) in states.iter().enumerate() {
            let p: *const __m128i = state.as_ptr().cast();
            // SAFETY: eight u32 are two unaligned 128-bit loads.
            let (dcba, hgfe) = unsafe { (_mm_loadu_si128(p), _mm_loadu_si128(p.add(1))) };
            let cdab = _mm_shuffle_epi32(dcba, 0xB1);
            let efgh = _mm_shuffle_epi32(hgfe, 0x1B);
            abef[l] = _mm_alignr_epi8(cdab, efgh, 8);
            cdgh[l] = _mm_blend_epi16(efgh, cdab, 0xF0);
        }
        // Big-endian words.
        let mask = _mm_set_epi64x(0x0C0D_0E0F_0809_0A0B, 0x0405_0607_0001_0203);
        let load = |block: &[u8; 64]| -> [__m128i; 4] {
            let p: *const __m128i = block.as_ptr().cast();
            // SAFETY: 64 bytes are four unaligned 128-bit loads.
            core::array::from_fn(|i| _mm_shuffle_epi8(unsafe { _mm_loadu_si128(p.add(i)) }, mask))
        };
        for (block_a, block_b) in a.iter().zip(b) {
            let (saved_abef, saved_cdgh) = (abef, cdgh);
            let mut w = [load(block_a), load(block_b)];
            for (i, (&wa, &wb)) in w[0].iter().zip(&w[1]).enumerate() {
                rounds4(i, &mut abef, &mut cdgh, [wa, wb]);
            }
            for r in (4..16).step_by(4) {
                for i in 0..4 {
                    let next = schedule(&mut w, i);
                    rounds4(r + i, &mut abef, &mut cdgh, next);
                }
            }
            abef = [0, 1].map(|l| _mm_add_epi32(abef[l], saved_abef[l]));
            cdgh = [0, 1].map(|l| _mm_add_epi32(cdgh[l], saved_cdgh[l]));
        }
        for (l, state) in states.into_iter().enumerate() {
            let feba = _mm_shuffle_epi32(abef[l], 0x1B);
            let dchg = _mm_shuffle_epi32(cdgh[l], 0xB1);
            let dcba = _mm_blend_epi16(feba, dchg, 0xF0);
            let hgef = _mm_alignr_epi8(dchg, feba, 8);
            let p: *mut __m128i = state.as_mut_ptr().cast();
            // SAFETY: eight u32 are two unaligned 128-bit stores.
            unsafe {
                _mm_storeu_si128(p, dcba);
                _mm_storeu_si128(p.add(1), hgef);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(m: &[u8]) -> [u8; 32] {
        Sha256::digest(m).into()
    }

    #[test]
    fn known_digests() {
        // FIPS 180-2 examples: "abc" and the 448-bit message, against "" (padding alone).
        let (abc, two_blocks) = digest_pair(
            b"abc",
            b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
        );
        assert_eq!(
            hex::encode(abc),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex::encode(two_blocks),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        let (empty, _) = digest_pair(b"", b"");
        assert_eq!(
            hex::encode(empty),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn every_length_around_the_block_edges() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        for la in (0..200).chain([511, 512, 513, 999]) {
            for lb in [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 999] {
                let (a, b) = (&data[..la], &data[1..=lb]);
                assert_eq!(digest_pair(a, b), (one(a), one(b)), "lengths {la} and {lb}");
            }
        }
        let all = digest_all([&data[..3], &data[5..900], &data[..]]);
        assert_eq!(all, vec![one(&data[..3]), one(&data[5..900]), one(&data)]);
    }

    proptest! {
        #[test]
        fn agrees_with_sha2(a in proptest::collection::vec(any::<u8>(), 0..5000),
                            b in proptest::collection::vec(any::<u8>(), 0..5000)) {
            prop_assert_eq!(digest_pair(&a, &b), (one(&a), one(&b)));
        }
    }
}
