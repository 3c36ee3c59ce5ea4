//! Per-request deadlines and abandoned requests (issue #17, point 5): a
//! caller that stops waiting leaves nothing behind. The request fails once
//! with `Failure::TimedOut` (or, abandoned, is never reported again), and
//! what its late reply carries goes back to the broker: a message is
//! requeued, a consumer cancelled, a channel closed. All on the scripted
//! broker and the simulated clock.

mod support;

use std::time::Duration;

use amqp_proto::codec::BasicProperties;
use amqp_proto::spec::{self, Method};
use amqp_proto::{Config, Event, Failure, RequestId};
use support::Peer;

const HEARTBEAT: u16 = 60;

fn open_peer() -> Peer {
    let mut peer = Peer::new(Config::default());
    peer.handshake(HEARTBEAT);
    peer
}

fn request(peer: &mut Peer, channel: u16, method: impl Into<Method>) -> RequestId {
    let request = peer
        .connection
        .channel(channel)
        .unwrap()
        .request(method)
        .unwrap()
        .expect("a request with a reply");
    peer.client_frames();
    request
}

fn get_ok(delivery_tag: u64) -> spec::BasicGetOk {
    spec::BasicGetOk {
        delivery_tag,
        redelivered: false,
        exchange: "".into(),
        routing_key: "jobs".into(),
        message_count: 0,
    }
}

fn deliver(consumer_tag: &str, delivery_tag: u64) -> spec::BasicDeliver {
    spec::BasicDeliver {
        consumer_tag: consumer_tag.into(),
        delivery_tag,
        redelivered: false,
        exchange: "".into(),
        routing_key: "jobs".into(),
    }
}

#[test]
fn a_deadline_fails_its_request_once_and_the_late_reply_is_dropped() {
    let mut peer = open_peer();
    let channel = peer.open_channel();
    let declare = request(&mut peer, channel, spec::QueueDeclare::default());
    let deadline = peer.now + Duration::from_secs(5);
    assert!(peer.connection.set_request_deadline(declare, deadline));
    assert_eq!(peer.connection.poll_timeout(), Some(deadline));

    peer.advance(Duration::from_millis(4_999));
    assert!(peer.events().is_empty(), "not before its deadline");
    peer.advance(Duration::from_millis(1));
    let events = peer.events();
    assert!(
        matches!(
            events.as_slice(),
            [Event::RequestFailed { channel: id, request, failure: Failure::TimedOut }]
                if *id == channel && *request == declare
        ),
        "{events:?}"
    );
    assert!(
        !peer.connection.abandon_request(declare),
        "a timed-out request is abandoned already"
    );

    // The channel goes on: the late reply matches the request it answers
    // and is dropped; the next request gets its own reply.
    let purge = request(
        &mut peer,
        channel,
        spec::QueuePurge {
            queue: "jobs".into(),
            ..Default::default()
        },
    );
    peer.send(channel, spec::QueueDeclareOk::default());
    peer.send(channel, spec::QueuePurgeOk { message_count: 3 });
    let events = peer.events();
    assert!(
        matches!(
            events.as_slice(),
            [Event::Reply { request, method: Method::QueuePurgeOk(ok), .. }]
                if *request == purge && ok.message_count == 3
        ),
        "{events:?}"
    );
    assert!(peer.connection.is_open());
}

#[test]
fn a_reply_in_time_takes_its_deadline_off_the_timer() {
    let mut peer = open_peer();
    let channel = peer.open_channel();
    let heartbeat_due = peer.connection.poll_timeout();
    let declare = request(&mut peer, channel, spec::QueueDeclare::default());
    let deadline = peer.now + Duration::from_secs(1);
    assert!(peer.connection.set_request_deadline(declare, deadline));
    // Set again: the later deadline replaces the first.
    let later = peer.now + Duration::from_secs(2);
    assert!(peer.connection.set_request_deadline(declare, later));
    assert_eq!(peer.connection.poll_timeout(), Some(later));

    peer.send(channel, spec::QueueDeclareOk::default());
    assert!(matches!(
        peer.events().as_slice(),
        [Event::Reply { request, .. }] if *request == declare
    ));
    assert_eq!(peer.connection.poll_timeout(), heartbeat_due);
    assert!(!peer.connection.set_request_deadline(declare, later));
    assert!(!peer.connection.abandon_request(declare));
    peer.advance(Duration::from_secs(3));
    assert!(peer.events().is_empty());
}

#[test]
fn an_abandoned_get_requeues_the_message_it_is_answered_with() {
    let mut peer = open_peer();
    let channel = peer.open_channel();
    let get = request(
        &mut peer,
        channel,
        spec::BasicGet {
            queue: "jobs".into(),
            ..Default::default()
        },
    );
    assert!(peer.connection.abandon_request(get));
    peer.send_content(channel, get_ok(7), BasicProperties::default(), b"job");
    assert!(peer.events().is_empty(), "nobody waits for it");
    let sent = peer.expect_methods(&["basic.reject"]);
    assert!(matches!(
        &sent[0].1,
        Method::BasicReject(reject) if reject.delivery_tag == 7 && reject.requeue
    ));

    // With no_ack the broker counts it delivered: nothing to give back.
    let get = request(
        &mut peer,
        channel,
        spec::BasicGet {
            queue: "jobs".into(),
            no_ack: true,
            ..Default::default()
        },
    );
    assert!(peer.connection.abandon_request(get));
    peer.send_content(channel, get_ok(8), BasicProperties::default(), b"job");
    assert!(peer.events().is_empty());
    peer.expect_methods(&[]);
}

#[test]
fn a_get_answered_before_its_deadline_is_not_failed_while_its_content_comes() {
    let mut peer = open_peer();
    let channel = peer.open_channel();
    let get = request(
        &mut peer,
        channel,
        spec::BasicGet {
            queue: "jobs".into(),
            ..Default::default()
        },
    );
    assert!(peer
        .connection
        .set_request_deadline(get, peer.now + Duration::from_secs(1)));
    let bytes = Peer::content_bytes(channel, get_ok(1), BasicProperties::default(), b"slow");
    let (first, rest) = bytes.split_at(bytes.len() - 3);
    peer.feed(first);
    peer.advance(Duration::from_secs(2));
    assert!(peer.events().is_empty(), "the answer has started to come");
    peer.feed(rest);
    let events = peer.events();
    assert!(
        matches!(events.as_slice(), [Event::GetOk { request, .. }] if *request == get),
        "{events:?}"
    );
    // Abandoned mid-content instead: the message is requeued.
    let get = request(
        &mut peer,
        channel,
        spec::BasicGet {
            queue: "jobs".into(),
            ..Default::default()
        },
    );
    let bytes = Peer::content_bytes(channel, get_ok(2), BasicProperties::default(), b"slow");
    let (first, rest) = bytes.split_at(bytes.len() - 3);
    peer.feed(first);
    assert!(peer.connection.abandon_request(get));
    peer.feed(rest);
    assert!(peer.events().is_empty());
    let sent = peer.expect_methods(&["basic.reject"]);
    assert!(matches!(
        &sent[0].1,
        Method::BasicReject(reject) if reject.delivery_tag == 2 && reject.requeue
    ));
}

#[test]
fn an_abandoned_consume_is_cancelled_and_its_deliveries_requeued() {
    let mut peer = open_peer();
    let channel = peer.open_channel();
    let consume = request(
        &mut peer,
        channel,
        spec::BasicConsume {
            queue: "jobs".into(),
            consumer_tag: "worker".into(),
            ..Default::default()
        },
    );
    assert!(peer
        .connection
        .set_request_deadline(consume, peer.now + Duration::from_secs(1)));
    peer.advance(Duration::from_secs(1));
    assert!(matches!(
        peer.events().as_slice(),
        [Event::RequestFailed {
            failure: Failure::TimedOut,
            ..
        }]
    ));

    // The consume-ok comes late: the core cancels the consumer itself.
    peer.send(
        channel,
        spec::BasicConsumeOk {
            consumer_tag: "worker".into(),
        },
    );
    let sent = peer.expect_methods(&["basic.cancel"]);
    assert!(matches!(
        &sent[0].1,
        Method::BasicCancel(cancel) if cancel.consumer_tag == "worker" && !cancel.nowait
    ));
    // Deliveries that crossed the cancel go back to the queue.
    peer.send_content(
        channel,
        deliver("worker", 1),
        BasicProperties::default(),
        b"a",
    );
    peer.send_content(
        channel,
        deliver("worker", 2),
        BasicProperties::default(),
        b"b",
    );
    let sent = peer.expect_methods(&["basic.reject", "basic.reject"]);
    for ((_, method), tag) in sent.iter().zip([1, 2]) {
        assert!(matches!(
            method,
            Method::BasicReject(reject) if reject.delivery_tag == tag && reject.requeue
        ));
    }
    peer.send(
        channel,
        spec::BasicCancelOk {
            consumer_tag: "worker".into(),
        },
    );
    assert!(peer.events().is_empty(), "nothing of it reaches the caller");
    // The channel is clean: the tag can be consumed with again.
    let again = request(
        &mut peer,
        channel,
        spec::BasicConsume {
            queue: "jobs".into(),
            consumer_tag: "worker".into(),
            ..Default::default()
        },
    );
    peer.send(
        channel,
        spec::BasicConsumeOk {
            consumer_tag: "worker".into(),
        },
    );
    peer.send_content(
        channel,
        deliver("worker", 3),
        BasicProperties::default(),
        b"c",
    );
    let events = peer.events();
    assert!(
        matches!(
            events.as_slice(),
            [Event::Reply { request, .. }, Event::Delivery(delivery)]
                if *request == again && delivery.delivery_tag == 3
        ),
        "{events:?}"
    );
}

#[test]
fn a_refused_delivery_to_an_abandoned_consumer_is_not_reported() {
    // A delivery too large to read, to a consumer whose consume was
    // abandoned: it is rejected as any refused message is, but nobody
    // waits for that consumer, so no event tells of it (as none tells of
    // an abandoned get's refused message).
    let mut config = Config::default();
    config.max_body_size = 4;
    let mut peer = Peer::new(config);
    peer.handshake(HEARTBEAT);
    let channel = peer.open_channel();
    let consume = request(
        &mut peer,
        channel,
        spec::BasicConsume {
            queue: "jobs".into(),
            consumer_tag: "worker".into(),
            ..Default::default()
        },
    );
    assert!(peer.connection.abandon_request(consume));
    peer.send(
        channel,
        spec::BasicConsumeOk {
            consumer_tag: "worker".into(),
        },
    );
    peer.expect_methods(&["basic.cancel"]);
    peer.send_content(
        channel,
        deliver("worker", 1),
        BasicProperties::default(),
        b"more than four bytes",
    );
    let events = peer.events();
    assert!(events.is_empty(), "{events:?}");
    let sent = peer.expect_methods(&["basic.reject"]);
    assert!(matches!(
        &sent[0].1,
        Method::BasicReject(reject) if reject.delivery_tag == 1 && !reject.requeue
    ));
    peer.send(
        channel,
        spec::BasicCancelOk {
            consumer_tag: "worker".into(),
        },
    );
    assert!(peer.events().is_empty());
    assert!(peer.connection.is_open());
}

#[test]
fn an_abandoned_cancel_gives_back_what_arrives_until_its_cancel_ok() {
    let mut peer = open_peer();
    let channel = peer.open_channel();
    let consume = request(
        &mut peer,
        channel,
        spec::BasicConsume {
            queue: "jobs".into(),
            consumer_tag: "worker".into(),
            ..Default::default()
        },
    );
    peer.send(
        channel,
        spec::BasicConsumeOk {
            consumer_tag: "worker".into(),
        },
    );
    assert!(matches!(
        peer.events().as_slice(),
        [Event::Reply { request, .. }] if *request == consume
    ));
    let cancel = request(
        &mut peer,
        channel,
        spec::BasicCancel {
            consumer_tag: "worker".into(),
            nowait: false,
        },
    );
    assert!(peer.connection.abandon_request(cancel));
    peer.send_content(
        channel,
        deliver("worker", 1),
        BasicProperties::default(),
        b"a",
    );
    let sent = peer.expect_methods(&["basic.reject"]);
    assert!(matches!(
        &sent[0].1,
        Method::BasicReject(reject) if reject.delivery_tag == 1 && reject.requeue
    ));
    peer.send(
        channel,
        spec::BasicCancelOk {
            consumer_tag: "worker".into(),
        },
    );
    assert!(peer.events().is_empty());
}

#[test]
fn an_abandoned_open_closes_its_channel_at_once() {
    let mut peer = open_peer();
    let handle = peer.connection.open_channel().unwrap();
    peer.expect_methods(&["channel.open"]);
    let open = peer
        .connection
        .channel(handle)
        .unwrap()
        .open_request()
        .expect("the open is awaited");
    assert!(peer
        .connection
        .set_request_deadline(open, peer.now + Duration::from_secs(1)));
    peer.advance(Duration::from_secs(1));
    let events = peer.events();
    assert!(
        matches!(
            events.as_slice(),
            [Event::RequestFailed { request, failure: Failure::TimedOut, .. }] if *request == open
        ),
        "{events:?}"
    );
    let sent = peer.expect_methods(&["channel.close"]);
    assert_eq!(sent[0].0, handle.id());
    // The late open-ok is discarded; the close-ok frees the id.
    peer.send(handle.id(), spec::ChannelOpenOk::default());
    peer.send(handle.id(), spec::ChannelCloseOk::default());
    let events = peer.events();
    assert!(
        matches!(events.as_slice(), [Event::ChannelClosed { channel, .. }] if *channel == handle.id()),
        "{events:?}"
    );
    assert!(peer.connection.is_open());
}

#[test]
fn a_connection_level_request_times_out_too() {
    let mut peer = open_peer();
    let update = peer.connection.update_secret("token", "expired").unwrap();
    peer.expect_methods(&["connection.update-secret"]);
    assert!(peer
        .connection
        .set_request_deadline(update, peer.now + Duration::from_secs(1)));
    peer.advance(Duration::from_secs(1));
    assert!(matches!(
        peer.events().as_slice(),
        [Event::RequestFailed { channel: 0, request, failure: Failure::TimedOut }] if *request == update
    ));
    peer.send(0, spec::ConnectionUpdateSecretOk::default());
    assert!(peer.events().is_empty());
    assert!(peer.connection.is_open());
}

#[test]
fn deadlines_of_requests_failed_by_a_close_leave_nothing_behind() {
    let mut peer = open_peer();
    let channel = peer.open_channel();
    let declare = request(&mut peer, channel, spec::QueueDeclare::default());
    assert!(peer
        .connection
        .set_request_deadline(declare, peer.now + Duration::from_secs(1)));
    peer.send(
        channel,
        spec::ChannelClose {
            reply_code: 404,
            reply_text: "NOT_FOUND".into(),
            class_id: 50,
            method_id: 10,
        },
    );
    let events = peer.events();
    assert!(
        matches!(
            events.as_slice(),
            [
                Event::RequestFailed {
                    failure: Failure::Channel(_),
                    ..
                },
                Event::ChannelClosed { .. }
            ]
        ),
        "{events:?}"
    );
    let next = peer.connection.poll_timeout().expect("heartbeats are due");
    assert!(
        next > peer.now + Duration::from_secs(1),
        "the failed request's deadline is off the timer"
    );
    peer.advance(Duration::from_secs(2));
    assert!(peer.events().is_empty(), "failed once, by the close");
}
