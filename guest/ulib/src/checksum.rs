//! Checksums for data-integrity checks.
//!
//! FNV-1a is hand-rolled rather than pulled from a crate: it is five lines,
//! needs no tables (small code, fast in ring 3), and the host side can
//! recompute it bit for bit when it checks survivors after a recovery.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a of `data`.
pub fn fnv1a64(data: &[u8]) -> u64 {
    fnv1a64_extend(FNV_OFFSET, data)
}

/// Continues an FNV-1a hash over more data.
pub fn fnv1a64_extend(mut hash: u64, data: &[u8]) -> u64 {
    for &b in data {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// A small deterministic generator (xorshift64*) for reproducible test
/// data: the same seed always yields the same bytes.
pub struct XorShift(u64);

impl XorShift {
    /// A generator seeded with `seed` (0 is replaced: it would repeat).
    pub fn new(seed: u64) -> XorShift {
        // Zero is xorshift's fixed point.
        XorShift(if seed == 0 { FNV_OFFSET } else { seed })
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
