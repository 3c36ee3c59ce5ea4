//! How long to wait before each reconnection attempt.

use std::time::Duration;

/// Exponential backoff with jitter for reconnection attempts: attempt `n`
/// waits between half and all of `initial · 2ⁿ` (capped at `max`), the
/// point in that range picked by a random number the adapter supplies, so
/// that many clients cut off at once do not all come back at once.
///
/// ```
/// # use std::time::Duration;
/// # use amqp_proto::Backoff;
/// let backoff = Backoff::default();
/// let first = backoff.delay(0, 0).unwrap();
/// assert_eq!(first, backoff.initial / 2);
/// let late = backoff.delay(30, 12_345).unwrap();
/// assert!(late <= backoff.max);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The upper bound of the first wait.
    pub initial: Duration,
    /// No wait is longer than this.
    pub max: Duration,
    /// Attempts before giving up; `None` tries for ever.
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    /// 100 ms doubling up to 10 s, for ever (RabbitMQ's Java client waits
    /// a fixed 5 s; doubling from short waits recovers faster from a blip
    /// and as gently from an outage).
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            max_attempts: None,
        }
    }
}

impl Backoff {
    /// The wait before attempt `attempt` (counting from 0), or `None` once
    /// `max_attempts` are used up. `random` is any random number; the same
    /// inputs give the same wait.
    #[must_use]
    pub fn delay(&self, attempt: u32, random: u64) -> Option<Duration> {
        if self.max_attempts.is_some_and(|max| attempt >= max) {
            return None;
        }
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        let ceiling = self.initial.saturating_mul(factor).min(self.max);
        let half = ceiling / 2;
        let spread = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
        let jitter = if spread == 0 {
            0
        } else {
            random % spread.saturating_add(1)
        };
        Some(half + Duration::from_nanos(jitter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn waits_stay_between_half_and_all_of_the_capped_ceiling(
            attempt in 0u32..100,
            random: u64,
        ) {
            let backoff = Backoff::default();
            let delay = backoff.delay(attempt, random);
            let ceiling = backoff.initial.saturating_mul(1u32 << attempt.min(31)).min(backoff.max);
            prop_assert!(delay.is_some_and(|d| d >= ceiling / 2 && d <= ceiling));
        }
    }

    #[test]
    fn gives_up_after_max_attempts() {
        let backoff = Backoff {
            max_attempts: Some(2),
            ..Backoff::default()
        };
        assert!(backoff.delay(1, 7).is_some());
        assert_eq!(backoff.delay(2, 7), None);
    }

    #[test]
    fn grows_until_the_cap() {
        let backoff = Backoff::default();
        // Random 0 gives the shortest wait: half the ceiling.
        let shortest: Vec<_> = (0..10).filter_map(|n| backoff.delay(n, 0)).collect();
        assert!(shortest
            .windows(2)
            .all(|pair| pair[0] < pair[1] || pair[1] == backoff.max / 2));
        assert_eq!(shortest.last().copied(), Some(backoff.max / 2));
    }
}
