//! Keys: building them from parts without ambiguity, and the hash the
//! index and hint files place them by.

/// Builds one store key from its parts (tenant, route, client key, ...),
/// each written as its decimal length, a `:`, then its bytes.
///
/// Joining parts with a separator is ambiguous: `("a:b", "c")` and
/// `("a", "b:c")` both join to `a:b:c`, so two requests would share a key.
/// Length prefixes make the parts recoverable, so different part lists
/// always give different keys, whatever bytes the parts hold; the key stays
/// readable in dumps (`5:acme_17:POST /v1/charges8:k-123456`).
///
/// **Put the caller's identity in the key.** A bare client-chosen key lets
/// one client replay another's response by guessing or reusing its key (the
/// IETF Idempotency-Key draft's security note). Scope it by the
/// authenticated tenant or user, and by the route, as below.
///
/// ```
/// use idemkv::{scoped_key, split_scoped_key};
///
/// let key = scoped_key(["acme", "POST /v1/charges", "k-123"]);
/// assert_eq!(key, b"4:acme16:POST /v1/charges5:k-123");
/// assert_ne!(scoped_key(["a:b", "c"]), scoped_key(["a", "b:c"]));
/// let parts = split_scoped_key(&key).unwrap();
/// assert_eq!(parts, [&b"acme"[..], b"POST /v1/charges", b"k-123"]);
/// ```
pub fn scoped_key<P: AsRef<[u8]>>(parts: impl IntoIterator<Item = P>) -> Vec<u8> {
    let mut key = Vec::new();
    for part in parts {
        let part = part.as_ref();
        key.extend_from_slice(part.len().to_string().as_bytes());
        key.push(b':');
        key.extend_from_slice(part);
    }
    key
}

/// Splits a key made by [`scoped_key`] back into its parts; `None` if the
/// bytes are not such a key.
pub fn split_scoped_key(mut key: &[u8]) -> Option<Vec<&[u8]>> {
    let mut parts = Vec::new();
    while !key.is_empty() {
        let colon = key.iter().position(|&b| b == b':')?;
        let digits = &key[..colon];
        // Canonical decimal only, so every key splits one way.
        if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') {
            return None;
        }
        let len: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
        let rest = &key[colon + 1..];
        if rest.len() < len {
            return None;
        }
        parts.push(&rest[..len]);
        key = &rest[len..];
    }
    Some(parts)
}

/// The hash a key is indexed by.
pub(crate) fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn different_part_lists_give_different_keys(
            a in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..6), 0..4),
            b in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..6), 0..4),
        ) {
            let (ka, kb) = (scoped_key(&a), scoped_key(&b));
            prop_assert_eq!(ka == kb, a == b);
            let split: Vec<Vec<u8>> = split_scoped_key(&ka).unwrap().into_iter().map(<[u8]>::to_vec).collect();
            prop_assert_eq!(split, a);
        }
    }

    #[test]
    fn malformed_keys_do_not_split() {
        for bad in [&b"3:ab"[..], b"x:a", b":a", b"01:a", b"4"] {
            assert_eq!(
                split_scoped_key(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(split_scoped_key(b""), Some(vec![]));
        assert_eq!(split_scoped_key(b"0:"), Some(vec![&b""[..]]));
    }
}
