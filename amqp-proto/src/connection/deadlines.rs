//! When callers stop waiting for their requests' replies: the deadlines
//! set with [`Connection::set_request_deadline`](crate::Connection::set_request_deadline),
//! soonest first.

use std::collections::BTreeSet;
use std::time::Instant;

use crate::event::RequestId;

/// The deadlines of requests still awaiting their replies. An entry goes
/// when its reply comes, its request fails or is abandoned, or the
/// deadline passes, so the set never holds more than the requests in
/// flight.
#[derive(Debug, Default)]
pub(crate) struct RequestDeadlines {
    soonest_first: BTreeSet<(Instant, RequestId)>,
}

impl RequestDeadlines {
    pub(crate) fn insert(&mut self, deadline: Instant, request: RequestId) {
        self.soonest_first.insert((deadline, request));
    }

    /// Forgets `request`'s deadline, if it had one.
    pub(crate) fn remove(&mut self, deadline: Option<Instant>, request: RequestId) {
        if let Some(deadline) = deadline {
            self.soonest_first.remove(&(deadline, request));
        }
    }

    /// The soonest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.soonest_first.first().map(|(deadline, _)| *deadline)
    }

    /// Takes the request whose deadline passed first by `now`, if any.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<RequestId> {
        let (deadline, _) = self.soonest_first.first()?;
        if *deadline > now {
            return None;
        }
        self.soonest_first.pop_first().map(|(_, request)| request)
    }

    pub(crate) fn clear(&mut self) {
        self.soonest_first.clear();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.soonest_first.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn due_requests_come_out_soonest_first_and_only_once_due() {
        let start = Instant::now();
        let mut deadlines = RequestDeadlines::default();
        deadlines.insert(start + Duration::from_secs(2), RequestId(2));
        deadlines.insert(start + Duration::from_secs(1), RequestId(1));
        deadlines.insert(start + Duration::from_secs(3), RequestId(3));
        deadlines.remove(Some(start + Duration::from_secs(3)), RequestId(3));
        assert_eq!(deadlines.next(), Some(start + Duration::from_secs(1)));
        assert_eq!(deadlines.pop_due(start), None);
        let later = start + Duration::from_secs(5);
        assert_eq!(deadlines.pop_due(later), Some(RequestId(1)));
        assert_eq!(deadlines.pop_due(later), Some(RequestId(2)));
        assert_eq!(deadlines.pop_due(later), None);
        assert_eq!(deadlines.len(), 0);
    }
}
