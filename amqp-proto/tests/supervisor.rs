//! The recovery supervisor on a simulated clock: when to reconnect, when
//! to give up, and what it reports.

use std::time::{Duration, Instant};

use amqp_proto::recovery::{Decision, RecoveryEvent, Supervisor};
use amqp_proto::{Backoff, ConnectionError};

fn reset() -> ConnectionError {
    ConnectionError::TransportClosed("reset".into())
}

fn events(supervisor: &mut Supervisor) -> Vec<RecoveryEvent> {
    std::iter::from_fn(|| supervisor.poll_event()).collect()
}

fn backoff(max_attempts: Option<u32>) -> Backoff {
    Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(8),
        max_attempts,
    }
}

#[test]
fn a_cut_is_recovered_after_the_backoffs_wait() {
    let start = Instant::now();
    let mut supervisor = Supervisor::new(backoff(None));
    let due = supervisor.on_closed(&reset(), true, start, 0);
    // Attempt 0 waits half of the initial second with zero jitter.
    assert_eq!(
        due,
        Decision::ReconnectAt(start + Duration::from_millis(500))
    );
    assert!(supervisor.is_between_sockets());
    assert!(!supervisor.start_attempt(start + Duration::from_millis(499)));
    assert!(supervisor.start_attempt(start + Duration::from_millis(500)));
    supervisor.connected();
    assert!(!supervisor.is_between_sockets());
    assert!(supervisor.is_recovering());
    supervisor.recovered(Vec::new(), Vec::new());
    assert!(!supervisor.is_recovering());
    let reported = events(&mut supervisor);
    assert!(matches!(
        reported.as_slice(),
        [
            RecoveryEvent::Started { .. },
            RecoveryEvent::Recovered { .. }
        ]
    ));
}

#[test]
fn failed_attempts_double_the_wait_and_are_reported() {
    let start = Instant::now();
    let mut supervisor = Supervisor::new(backoff(None));
    let _ = supervisor.on_closed(&reset(), true, start, 0);
    let mut now = start;
    for attempt in 1..=4u32 {
        now += Duration::from_secs(10);
        assert!(supervisor.start_attempt(now));
        let due = supervisor.connect_failed(reset(), now, 0);
        let wait = Duration::from_secs(1) * 2u32.pow(attempt).min(8) / 2;
        assert_eq!(due, Decision::ReconnectAt(now + wait));
    }
    let reported = events(&mut supervisor);
    assert_eq!(reported.len(), 5);
    assert!(matches!(
        reported[4],
        RecoveryEvent::AttemptFailed { attempt: 4, .. }
    ));
}

#[test]
fn a_new_connection_failing_in_any_way_is_a_failed_attempt() {
    let start = Instant::now();
    let mut supervisor = Supervisor::new(backoff(Some(2)));
    let _ = supervisor.on_closed(&reset(), true, start, 0);
    assert!(supervisor.start_attempt(start + Duration::from_secs(1)));
    supervisor.connected();
    // A refusal would end a first connection; during a recovery it is
    // one more failed attempt (a broker starting up may refuse).
    let refused = ConnectionError::AccessRefused("starting".into());
    let due = supervisor.on_closed(&refused, true, start + Duration::from_secs(2), 0);
    assert!(matches!(due, Decision::ReconnectAt(_)));
    assert!(supervisor.start_attempt(start + Duration::from_secs(9)));
    supervisor.connected();
    // The attempts run out.
    let due = supervisor.on_closed(&reset(), true, start + Duration::from_secs(10), 0);
    assert_eq!(due, Decision::GiveUp);
    assert!(matches!(
        events(&mut supervisor).last(),
        Some(RecoveryEvent::GaveUp { .. })
    ));
    assert!(!supervisor.is_recovering());
}

#[test]
fn what_a_new_connection_cannot_cure_is_not_retried() {
    let mut supervisor = Supervisor::new(backoff(None));
    let refused = ConnectionError::AccessRefused("no such vhost".into());
    assert_eq!(
        supervisor.on_closed(&refused, true, Instant::now(), 0),
        Decision::GiveUp
    );
    assert_eq!(
        supervisor.on_closed(&reset(), false, Instant::now(), 0),
        Decision::GiveUp
    );
    assert!(events(&mut supervisor).is_empty(), "nothing was started");
}

#[test]
fn closing_between_sockets_gives_up_with_the_last_failure() {
    let start = Instant::now();
    let mut supervisor = Supervisor::new(backoff(None));
    let _ = supervisor.on_closed(&reset(), true, start, 0);
    assert_eq!(supervisor.last_error(), Some(&reset()));
    supervisor.shut_down();
    assert_eq!(supervisor.poll_timeout(), None);
    assert!(matches!(
        events(&mut supervisor).as_slice(),
        [RecoveryEvent::Started { .. }, RecoveryEvent::GaveUp { error }] if *error == reset()
    ));
}
