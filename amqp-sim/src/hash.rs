//! A 64-bit FNV-1a hash of a run's observable trace (events, bytes
//! written, times), for the determinism and split-invariance checks.

use std::fmt;

/// FNV-1a, fed bytes or formatted text; the same input gives the same
/// value on every platform.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TraceHash(u64);

impl Default for TraceHash {
    fn default() -> Self {
        Self(0xCBF2_9CE4_8422_2325)
    }
}

impl TraceHash {
    pub(crate) fn bytes(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01B3);
        }
    }

    pub(crate) fn number(&mut self, value: u64) {
        self.bytes(&value.to_le_bytes());
    }

    pub(crate) fn value(self) -> u64 {
        self.0
    }
}

/// Formatting straight into the hash: no string is allocated.
impl fmt::Write for TraceHash {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.bytes(s.as_bytes());
        Ok(())
    }
}
