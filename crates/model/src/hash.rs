//! A small, stable content hash (FNV-1a, 64 bits): the same bytes give the same
//! value in every process and Rust version. For change detection, not security.

#[derive(Debug, Clone, Copy)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    pub fn write(&mut self, bytes: &[u8]) -> &mut Self {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so that ("ab","c") and ("a","bc") differ.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        self
    }

    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// The hash of `parts`, as 16 hex digits.
pub fn hash_hex<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut h = Fnv64::default();
    for p in parts {
        h.write(p);
    }
    h.hex()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_separated() {
        assert_eq!(hash_hex([b"a".as_slice()]), hash_hex([b"a".as_slice()]));
        assert_ne!(hash_hex([b"ab".as_slice(), b"c"]), hash_hex([b"a".as_slice(), b"bc"]));
        assert_eq!(hash_hex([b"".as_slice()]).len(), 16);
    }
}
