//! Little-endian fields read from byte slices the caller has bounded.

/// The `u32` at `at`; the caller checked that four bytes are there.
pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// The `u64` at `at`; the caller checked that eight bytes are there.
pub(crate) fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The `u128` at `at`; the caller checked that sixteen bytes are there.
pub(crate) fn le_u128(b: &[u8], at: usize) -> u128 {
    u128::from(le_u64(b, at)) | (u128::from(le_u64(b, at + 8)) << 64)
}
