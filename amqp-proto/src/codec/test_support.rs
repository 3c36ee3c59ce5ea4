//! Helpers shared by the codec's unit tests.

use arbitrary::{Arbitrary, Unstructured};
use proptest::prelude::*;

/// A proptest strategy yielding `T` built by `arbitrary` from random bytes,
/// so every type the fuzzers see is property-tested from the same
/// derivations.
pub(crate) fn arbitrary_value<T>() -> impl Strategy<Value = T>
where
    T: for<'a> Arbitrary<'a> + std::fmt::Debug,
{
    proptest::collection::vec(any::<u8>(), 0..2048).prop_filter_map("arbitrary gave up", |bytes| {
        T::arbitrary(&mut Unstructured::new(&bytes)).ok()
    })
}
