//! Read-only scans of a batch before it is stored: the OR, and when that is not enough
//! the AND, of a list of big-endian words (H_PUT_TCE_INDIRECT's bounds, validated before
//! any entry is stored). Each is a fold the compiler vectorizes; on x86-64 the fold is
//! also compiled for AVX2 and AVX-512F and the widest one the CPU has is chosen at run
//! time (`is_x86_feature_detected!`, cached after the first call), because with the
//! baseline SSE2 the scan costs about as many instructions as the stores it guards.
//! (Write-implies-read needs no scan: readers apply it, see
//! `TableOptions::write_implies_read`.)
//!
//! The scan reads private memory only (the copy of a guest list): it races with nothing.
//! The one `unsafe` here calls a function compiled for a CPU feature, after checking that
//! the CPU has it.

/// The 8-byte words of `bytes`, as they sit in memory.
#[inline(always)]
fn words(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    bytes.chunks_exact(8).map(|w| {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        u64::from_ne_bytes(b)
    })
}

/// The OR of the 8-byte words of `bytes`.
#[inline(always)]
fn or_fold(bytes: &[u8]) -> u64 {
    words(bytes).fold(0, |a, v| a | v)
}

/// The AND of the 8-byte words of `bytes`.
#[inline(always)]
fn and_fold(bytes: &[u8]) -> u64 {
    words(bytes).fold(!0, |a, v| a & v)
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    use super::{and_fold, or_fold};

    /// One fold compiled three ways. The two vector ones are `unsafe` to call only because
    /// they need their CPU feature; [`Self::run`] checks it first.
    pub(super) struct Variants<I: ?Sized + 'static, R: 'static> {
        avx512: unsafe fn(&I) -> R,
        avx2: unsafe fn(&I) -> R,
        scalar: fn(&I) -> R,
    }

    impl<I: ?Sized, R> Variants<I, R> {
        /// The widest variant this CPU runs.
        #[inline(always)]
        pub(super) fn run(&self, input: &I) -> R {
            if std::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F (checked on the line above), the only
                // requirement for calling a safe function compiled with it enabled.
                unsafe { (self.avx512)(input) }
            } else if std::is_x86_feature_detected!("avx2") {
                // SAFETY: as above, for AVX2.
                unsafe { (self.avx2)(input) }
            } else {
                (self.scalar)(input)
            }
        }

        /// Every variant this CPU can run gives the scalar answer.
        #[cfg(test)]
        pub(super) fn all_agree(&self, input: &I)
        where
            R: PartialEq + core::fmt::Debug,
        {
            let want = (self.scalar)(input);
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2 (checked on the line above).
                assert_eq!(unsafe { (self.avx2)(input) }, want);
            }
            if std::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F (checked on the line above).
                assert_eq!(unsafe { (self.avx512)(input) }, want);
            }
        }
    }

    /// A fold compiled three ways: `$name` holds it for AVX-512F, AVX2 and the baseline.
    macro_rules! variants {
        ($(#[$doc:meta])* $name:ident = $fold:ident) => {
            $(#[$doc])*
            pub(super) const $name: Variants<[u8], u64> = {
                #[target_feature(enable = "avx512f")]
                fn avx512(bytes: &[u8]) -> u64 {
                    $fold(bytes)
                }
                #[target_feature(enable = "avx2")]
                fn avx2(bytes: &[u8]) -> u64 {
                    $fold(bytes)
                }
                Variants {
                    avx512,
                    avx2,
                    scalar: $fold,
                }
            };
        };
    }
    variants!(
        /// [`super::or_fold`], compiled three ways.
        OR = or_fold
    );
    variants!(
        /// [`super::and_fold`], compiled three ways.
        AND = and_fold
    );
}

/// The OR of the 8-byte words of `bytes` as they sit in memory (a trailing partial word
/// is ignored; 0 for none). A byte swap permutes bits, so it commutes with OR and AND:
/// swap the result to get the bound of big-endian entries.
#[inline]
pub fn or_words(bytes: &[u8]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    return x86::OR.run(bytes);
    #[cfg(not(target_arch = "x86_64"))]
    return or_fold(bytes);
}

/// The AND of the 8-byte words of `bytes` as they sit in memory (a trailing partial word
/// is ignored; all ones for none), as [`or_words`].
#[inline]
pub fn and_words(bytes: &[u8]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    return x86::AND.run(bytes);
    #[cfg(not(target_arch = "x86_64"))]
    return and_fold(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn or_and_match_a_plain_loop_and_ignore_a_partial_word() {
        let mut bytes: Vec<u8> = (0..8 * 300 + 5).map(|i| (i * 37 % 251) as u8).collect();
        for _ in 0..2 {
            let (mut any, mut all) = (0u64, !0u64);
            for k in 0..300 {
                let w = u64::from_ne_bytes(bytes[8 * k..8 * k + 8].try_into().unwrap());
                any |= w;
                all &= w;
            }
            assert_eq!((or_words(&bytes), and_words(&bytes)), (any, all));
            bytes[8 * 299 + 3] = 0;
        }
        assert_eq!((or_words(&[0xff; 7]), and_words(&[0xff; 7])), (0, !0));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_compiled_variant_gives_the_scalar_answer() {
        for n in [0usize, 1, 7, 8, 9, 63, 64, 65, 512] {
            for hole in [None, Some(0), Some(n / 2), Some(n.saturating_sub(1))] {
                let mut v: Vec<u64> = (0..n as u64).map(|k| (k << 12) | 3).collect();
                if let Some(h) = hole.filter(|h| *h < n) {
                    v[h] = 2;
                }
                let bytes: Vec<u8> = v.iter().flat_map(|t| t.to_be_bytes()).collect();
                x86::OR.all_agree(&bytes[..]);
                x86::AND.all_agree(&bytes[..]);
            }
        }
    }
}
