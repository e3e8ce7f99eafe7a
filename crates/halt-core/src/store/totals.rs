//! [`Totals`]: the counters' totals a reservation reports, kept inline when few.

use std::fmt;
use std::ops::{Deref, DerefMut};

use arrayvec::ArrayVec;

/// How many totals are kept without allocating (a guard's reservation rarely has more counters).
const INLINE: usize = 4;

/// Each counter's total after a reservation, in request order (see
/// [`ReserveOutcome::Reserved`](super::ReserveOutcome::Reserved)). It reads as a slice of `i64`;
/// up to four totals are kept inline, so the usual reservation allocates nothing for them.
///
/// ```
/// use halt_core::store::Totals;
///
/// let mut totals = Totals::new();
/// totals.extend([600_000, 5]);
/// assert_eq!(totals, [600_000, 5]);
/// assert_eq!(totals.iter().sum::<i64>(), 600_005);
/// let many: Totals = (1..=6).collect();
/// assert_eq!(many.len(), 6);
/// ```
#[derive(Clone, Default)]
pub struct Totals(Repr);

#[derive(Clone)]
enum Repr {
    Inline(ArrayVec<i64, INLINE>),
    Heap(Vec<i64>),
}

impl Default for Repr {
    fn default() -> Self {
        Self::Inline(ArrayVec::new())
    }
}

impl Totals {
    /// No totals yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a total.
    #[inline]
    pub fn push(&mut self, total: i64) {
        match &mut self.0 {
            Repr::Inline(inline) => {
                if let Err(full) = inline.try_push(total) {
                    let mut heap = Vec::with_capacity(INLINE * 2);
                    heap.extend_from_slice(inline);
                    heap.push(full.element());
                    self.0 = Repr::Heap(heap);
                }
            }
            Repr::Heap(heap) => heap.push(total),
        }
    }
}

impl Deref for Totals {
    type Target = [i64];

    fn deref(&self) -> &[i64] {
        match &self.0 {
            Repr::Inline(inline) => inline,
            Repr::Heap(heap) => heap,
        }
    }
}

impl DerefMut for Totals {
    fn deref_mut(&mut self) -> &mut [i64] {
        match &mut self.0 {
            Repr::Inline(inline) => inline,
            Repr::Heap(heap) => heap,
        }
    }
}

impl fmt::Debug for Totals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Extend<i64> for Totals {
    fn extend<I: IntoIterator<Item = i64>>(&mut self, iter: I) {
        for total in iter {
            self.push(total);
        }
    }
}

impl FromIterator<i64> for Totals {
    fn from_iter<I: IntoIterator<Item = i64>>(iter: I) -> Self {
        let mut totals = Self::new();
        totals.extend(iter);
        totals
    }
}

impl From<Vec<i64>> for Totals {
    fn from(totals: Vec<i64>) -> Self {
        Self(Repr::Heap(totals))
    }
}

impl From<&[i64]> for Totals {
    fn from(totals: &[i64]) -> Self {
        match ArrayVec::try_from(totals) {
            Ok(inline) => Self(Repr::Inline(inline)),
            Err(_) => Self(Repr::Heap(totals.to_vec())),
        }
    }
}

impl<'a> IntoIterator for &'a Totals {
    type Item = &'a i64;
    type IntoIter = std::slice::Iter<'a, i64>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl PartialEq for Totals {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Totals {}

impl PartialEq<[i64]> for Totals {
    fn eq(&self, other: &[i64]) -> bool {
        **self == *other
    }
}

impl<const N: usize> PartialEq<[i64; N]> for Totals {
    fn eq(&self, other: &[i64; N]) -> bool {
        **self == *other
    }
}

impl PartialEq<Vec<i64>> for Totals {
    fn eq(&self, other: &Vec<i64>) -> bool {
        **self == **other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_same_inline_or_not() {
        let mut grown = Totals::new();
        for t in 1..=9 {
            grown.push(t);
            let expected: Vec<i64> = (1..=t).collect();
            assert_eq!(grown, expected, "after {t} pushes");
            assert_eq!(grown, Totals::from(expected.clone()));
            assert_eq!(grown, Totals::from(expected.as_slice()));
        }
        assert_ne!(grown, [1, 2, 3]);
        let mut inline: Totals = [1, 2].into_iter().collect();
        inline[1] = 7;
        assert_eq!(inline, [1, 7]);
        assert_eq!(format!("{inline:?}"), "[1, 7]");
        assert_eq!(Totals::new(), Totals::from(Vec::new()));
    }
}
