//! Which address a connection tries next, written once for both adapters:
//! an opening walks the [`addresses`](crate::ConnectOptions::addresses) in
//! their [`AddressOrder`], a recovery starts after the node it lost (so a
//! dead node is tried last, not first), and when every address fails the
//! error names each one and why.
//!
//! ```
//! use amqp_io_common::failover::AddressAttempts;
//! use amqp_io_common::{Address, ConnectOptions, Error};
//!
//! let options = ConnectOptions::from_urls(["amqp://node-1", "amqp://node-2", "amqp://node-3"])?;
//! // The connection was on node-2 (index 1) when it failed.
//! let mut attempts = AddressAttempts::recovering(&options, 1);
//! let mut tried = Vec::new();
//! while let Some((_, address)) = attempts.next() {
//!     tried.push(address.host.clone());
//!     let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
//!     attempts.failed(address, Error::Connect { address: address.to_string(), source: refused });
//! }
//! assert_eq!(tried, ["node-3", "node-1", "node-2"]);
//! let error = attempts.into_error();
//! assert!(matches!(&error, Error::NoAddressConnected(failures) if failures.len() == 3));
//! assert!(error.to_string().starts_with("no address could be connected to: node-3:5672: cannot connect"));
//! # Ok::<(), Error>(())
//! ```

use crate::error::AddressFailure;
use crate::options::{Address, AddressOrder, ConnectOptions};
use crate::Error;

/// The addresses one connection attempt tries, in order, and the failures
/// so far.
#[derive(Debug)]
pub struct AddressAttempts<'a> {
    addresses: &'a [Address],
    /// Indexes into `addresses`, each once.
    order: Vec<usize>,
    position: usize,
    failures: Vec<AddressFailure>,
}

impl<'a> AddressAttempts<'a> {
    /// For opening a connection with `options`: in their
    /// [`address_order`](ConnectOptions::address_order), shuffled with
    /// `seed` when it says so.
    #[must_use]
    pub fn opening(options: &'a ConnectOptions, seed: u64) -> Self {
        let mut order: Vec<usize> = (0..options.addresses.len()).collect();
        if options.address_order == AddressOrder::Shuffled {
            shuffle(&mut order, seed);
        }
        Self::new(&options.addresses, order)
    }

    /// For a recovery of a connection that was on address `lost` (an index
    /// into [`addresses`](ConnectOptions::addresses)): every address, the
    /// ones after it first, the lost one last (it may have come back).
    #[must_use]
    pub fn recovering(options: &'a ConnectOptions, lost: usize) -> Self {
        let count = options.addresses.len();
        let order = (1..=count).map(|step| (lost + step) % count).collect();
        Self::new(&options.addresses, order)
    }

    fn new(addresses: &'a [Address], order: Vec<usize>) -> Self {
        Self {
            addresses,
            order,
            position: 0,
            failures: Vec::new(),
        }
    }

    /// The next address to try, with its index, or `None` when every one
    /// was tried.
    #[allow(clippy::should_implement_trait)] // an iterator could not take failures in between
    pub fn next(&mut self) -> Option<(usize, &'a Address)> {
        let index = *self.order.get(self.position)?;
        self.position += 1;
        Some((index, self.addresses.get(index)?))
    }

    /// The attempt on `address` failed with `error`.
    pub fn failed(&mut self, address: &Address, error: Error) {
        self.failures.push(AddressFailure {
            address: address.to_string(),
            error: Box::new(error),
        });
    }

    /// Every address failed: the one failure when there was one address
    /// (so a single-node connection reports exactly what went wrong), else
    /// [`Error::NoAddressConnected`] with all of them.
    #[must_use]
    pub fn into_error(mut self) -> Error {
        match self.failures.len() {
            0 => Error::NoAddress,
            1 => match self.failures.pop() {
                Some(failure) => *failure.error,
                None => Error::NoAddress,
            },
            _ => Error::NoAddressConnected(self.failures),
        }
    }
}

/// Fisher-Yates with a small xorshift generator: shuffling a handful of
/// addresses needs no cryptographic randomness, only a different order per
/// client.
fn shuffle(order: &mut [usize], seed: u64) {
    let mut state = seed | 1;
    for last in (1..order.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let pick = usize::try_from(state % (last as u64 + 1)).unwrap_or(0);
        order.swap(last, pick);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(count: usize) -> ConnectOptions {
        ConnectOptions::from_urls((1..=count).map(|n| format!("amqp://node-{n}")))
            .expect("valid URLs")
    }

    fn walk(mut attempts: AddressAttempts<'_>) -> Vec<usize> {
        std::iter::from_fn(|| attempts.next().map(|(index, _)| index)).collect()
    }

    #[test]
    fn an_opening_tries_the_addresses_as_listed() {
        let options = options(3);
        assert_eq!(walk(AddressAttempts::opening(&options, 7)), [0, 1, 2]);
    }

    #[test]
    fn a_shuffled_opening_tries_each_address_once_in_an_order_the_seed_picks() {
        let mut options = options(5);
        options.address_order = AddressOrder::Shuffled;
        let mut orders = std::collections::HashSet::new();
        for seed in 0..64 {
            let mut order = walk(AddressAttempts::opening(&options, seed));
            orders.insert(order.clone());
            order.sort_unstable();
            assert_eq!(order, [0, 1, 2, 3, 4]);
        }
        assert!(orders.len() > 10, "{orders:?}");
    }

    #[test]
    fn a_recovery_starts_after_the_lost_address_and_tries_it_last() {
        let options = options(3);
        assert_eq!(walk(AddressAttempts::recovering(&options, 0)), [1, 2, 0]);
        assert_eq!(walk(AddressAttempts::recovering(&options, 2)), [0, 1, 2]);
        let single = self::options(1);
        assert_eq!(walk(AddressAttempts::recovering(&single, 0)), [0]);
    }

    #[test]
    fn one_address_reports_its_own_error_and_several_name_every_failure() {
        let options = options(1);
        let mut attempts = AddressAttempts::opening(&options, 0);
        let (_, address) = attempts.next().expect("one address");
        attempts.failed(address, Error::Tls("bad certificate".into()));
        assert!(matches!(attempts.into_error(), Error::Tls(_)));

        let options = self::options(2);
        let mut attempts = AddressAttempts::opening(&options, 0);
        while let Some((_, address)) = attempts.next() {
            attempts.failed(
                address,
                Error::Tls(format!("bad certificate of {}", address.host)),
            );
        }
        let error = attempts.into_error();
        assert_eq!(
            error.to_string(),
            "no address could be connected to: node-1:5672: TLS setup failed: bad certificate of node-1; \
             node-2:5672: TLS setup failed: bad certificate of node-2"
        );
    }

    #[test]
    fn no_address_is_an_error_of_its_own() {
        let mut options = options(1);
        options.addresses.clear();
        let mut attempts = AddressAttempts::opening(&options, 0);
        assert!(attempts.next().is_none());
        assert!(matches!(attempts.into_error(), Error::NoAddress));
    }
}
