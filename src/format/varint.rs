//! LEB128 varints: seven bits a byte, low bits first, the high bit set on every byte but the
//! last.

/// Appends `v` (1 to 10 bytes).
pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The varint at `*at`, moving `at` past it; `None` if the bytes end inside it or it does not
/// fit in 64 bits.
pub(crate) fn get_uvarint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        if shift == 63 && b > 1 {
            return None;
        }
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// `v` mapped so that small magnitudes of either sign are small (0, -1, 1, -2 → 0, 1, 2, 3).
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// The inverse of [`zigzag`].
pub(crate) fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn edges() {
        for v in [0, 1, 0x7f, 0x80, 0x3fff, 0x4000, u64::MAX - 1, u64::MAX] {
            let mut b = Vec::new();
            put_uvarint(&mut b, v);
            let mut at = 0;
            assert_eq!(get_uvarint(&b, &mut at), Some(v));
            assert_eq!(at, b.len());
            assert_eq!(get_uvarint(&b[..b.len() - 1], &mut 0), None);
        }
        // An eleventh byte, or a tenth carrying more than the 64th bit, does not fit.
        assert_eq!(get_uvarint(&[0xff; 10], &mut 0), None);
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert_eq!(get_uvarint(&over, &mut 0), None);
        for v in [0, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!([zigzag(0), zigzag(-1), zigzag(1), zigzag(-2)], [0, 1, 2, 3]);
    }

    proptest! {
        #[test]
        fn round_trip(vs in proptest::collection::vec(any::<u64>(), 0..20), s in any::<i64>()) {
            let mut b = Vec::new();
            for &v in &vs {
                put_uvarint(&mut b, v);
            }
            let mut at = 0;
            for &v in &vs {
                prop_assert_eq!(get_uvarint(&b, &mut at), Some(v));
            }
            prop_assert_eq!(at, b.len());
            prop_assert_eq!(unzigzag(zigzag(s)), s);
        }
    }
}
