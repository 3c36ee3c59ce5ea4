//! Automatic recovery against the scripted broker: what a connection
//! records, how a new connection declares it again, and how delivery tags
//! and confirms carry across.

mod support;

use amqp_proto::codec::{BasicProperties, ShortString};
use amqp_proto::spec::constants::ReplyCode;
use amqp_proto::spec::{self, Method};
use amqp_proto::{
    Config, ConfirmOutcome, Connection, ConnectionError, Event, Failure, Readiness, Topology,
    UsageError,
};
use support::Peer;

fn recording() -> Config {
    let mut config = Config::default();
    config.record_topology = true;
    config
}

/// The client must have sent exactly `name` (on `channel`); the server
/// answers with `reply`.
fn answer(peer: &mut Peer, channel: u16, name: &str, reply: impl Into<Method>) -> Method {
    let mut sent = peer.expect_methods(&[name]);
    let (on, method) = sent.remove(0);
    assert_eq!(on, channel, "{name} goes on channel {channel}");
    peer.send(channel, reply);
    method
}

fn request(peer: &mut Peer, channel: u16, method: impl Into<Method>) {
    peer.connection
        .channel(channel)
        .unwrap()
        .request(method)
        .unwrap();
}

fn declare_ok(queue: &str) -> spec::QueueDeclareOk {
    spec::QueueDeclareOk {
        queue: queue.into(),
        message_count: 0,
        consumer_count: 0,
    }
}

fn consume_ok(tag: &str) -> spec::BasicConsumeOk {
    spec::BasicConsumeOk {
        consumer_tag: tag.into(),
    }
}

fn deliver(peer: &mut Peer, channel: u16, tag: &str, delivery_tag: u64) {
    let deliver = spec::BasicDeliver {
        consumer_tag: tag.into(),
        delivery_tag,
        redelivered: false,
        exchange: "".into(),
        routing_key: "jobs".into(),
    };
    peer.send_content(channel, deliver, BasicProperties::default(), b"job");
}

fn publish(peer: &mut Peer, channel: u16) -> Option<u64> {
    peer.connection
        .channel(channel)
        .unwrap()
        .publish(
            &spec::BasicPublish {
                routing_key: "jobs".into(),
                ..Default::default()
            },
            &BasicProperties::default(),
            &b"job"[..],
        )
        .unwrap()
}

/// A connection that opened channel 1 in confirm mode with qos 10,
/// declared an exchange, a server-named queue bound to it and a named
/// queue, and consumes from both; it published two messages (one
/// confirmed) and was given three deliveries (one acknowledged) before its
/// socket failed. Returns the recorded topology.
fn failed_connection() -> Topology {
    let mut peer = Peer::new(recording());
    peer.handshake(0);
    let channel = peer.open_channel();
    request(&mut peer, channel, spec::ConfirmSelect::default());
    answer(&mut peer, 1, "confirm.select", spec::ConfirmSelectOk {});
    let qos = spec::BasicQos {
        prefetch_count: 10,
        ..Default::default()
    };
    request(&mut peer, channel, qos);
    answer(&mut peer, 1, "basic.qos", spec::BasicQosOk {});
    let exchange = spec::ExchangeDeclare {
        exchange: "events".into(),
        exchange_type: "topic".into(),
        ..Default::default()
    };
    request(&mut peer, channel, exchange);
    answer(&mut peer, 1, "exchange.declare", spec::ExchangeDeclareOk {});
    request(&mut peer, channel, spec::QueueDeclare::default());
    answer(&mut peer, 1, "queue.declare", declare_ok("amq.gen-old"));
    let bind = spec::QueueBind {
        queue: "amq.gen-old".into(),
        exchange: "events".into(),
        routing_key: "audit.#".into(),
        ..Default::default()
    };
    request(&mut peer, channel, bind);
    answer(&mut peer, 1, "queue.bind", spec::QueueBindOk {});
    let jobs = spec::QueueDeclare {
        queue: "jobs".into(),
        durable: true,
        ..Default::default()
    };
    request(&mut peer, channel, jobs);
    answer(&mut peer, 1, "queue.declare", declare_ok("jobs"));
    // A passive declare checks; it declares nothing to recover.
    request(
        &mut peer,
        channel,
        spec::QueueDeclare {
            queue: "elsewhere".into(),
            passive: true,
            ..Default::default()
        },
    );
    answer(&mut peer, 1, "queue.declare", declare_ok("elsewhere"));
    let consume = |queue: &str, tag: &str| spec::BasicConsume {
        queue: queue.into(),
        consumer_tag: tag.into(),
        ..Default::default()
    };
    request(&mut peer, channel, consume("jobs", ""));
    answer(&mut peer, 1, "basic.consume", consume_ok("amq.ctag-1"));
    request(&mut peer, channel, consume("amq.gen-old", "audit"));
    answer(&mut peer, 1, "basic.consume", consume_ok("audit"));
    peer.events();

    assert_eq!(publish(&mut peer, channel), Some(1));
    assert_eq!(publish(&mut peer, channel), Some(2));
    peer.client_frames();
    peer.send(
        channel,
        spec::BasicAck {
            delivery_tag: 1,
            multiple: false,
        },
    );
    for tag in 1..=3 {
        deliver(&mut peer, channel, "amq.ctag-1", tag);
    }
    peer.connection
        .channel(channel)
        .unwrap()
        .ack(1, false)
        .unwrap();
    peer.client_frames();
    peer.events();
    assert_eq!(peer.connection.stats().unsettled, 2);

    peer.connection.handle_transport_closed("reset by peer");
    assert_eq!(peer.connection.stats().unsettled, 0);
    let events = peer.events();
    let failed = ConfirmOutcome::Failed(Failure::Connection(ConnectionError::TransportClosed(
        "reset by peer".into(),
    )));
    assert!(
        matches!(events.as_slice(), [
            Event::Confirm { sequence: 2, outcome, .. },
            Event::Closed(error),
        ] if *outcome == failed && error.is_recoverable()),
        "the unconfirmed publish fails, never re-sent: {events:?}"
    );
    peer.connection
        .topology()
        .cloned()
        .expect("recording is on")
}

/// A recovering connection through its handshake, up to open-ok.
fn recovering(topology: Topology) -> Peer {
    let mut peer = Peer::new(recording());
    peer.connection = Connection::recover(recording(), topology, peer.now);
    peer.send(
        0,
        spec::ConnectionStart {
            version_major: 0,
            version_minor: 9,
            mechanisms: "PLAIN".into(),
            locales: "en_US".into(),
            ..Default::default()
        },
    );
    peer.expect_methods(&["connection.start-ok"]);
    peer.send(
        0,
        spec::ConnectionTune {
            channel_max: 2047,
            frame_max: support::SERVER_FRAME_MAX,
            heartbeat: 0,
        },
    );
    peer.expect_methods(&["connection.tune-ok", "connection.open"]);
    assert!(peer.connection.is_recovering());
    peer.send(0, spec::ConnectionOpenOk::default());
    peer
}

#[test]
fn the_recorded_topology_is_declared_again_in_order() {
    let topology = failed_connection();
    assert_eq!(
        topology.queues().len(),
        2,
        "the passive check is not recorded"
    );
    let mut peer = recovering(topology);
    assert!(matches!(peer.events().as_slice(), [Event::Opened { .. }]));

    answer(&mut peer, 1, "channel.open", spec::ChannelOpenOk::default());
    assert_eq!(
        peer.connection.channel(1).err(),
        Some(UsageError::Recovering),
        "the application waits for the replay"
    );
    assert_eq!(peer.connection.publish_readiness(1), Readiness::Recovering);
    answer(&mut peer, 1, "confirm.select", spec::ConfirmSelectOk {});
    let qos = answer(&mut peer, 1, "basic.qos", spec::BasicQosOk {});
    assert!(matches!(qos, Method::BasicQos(q) if q.prefetch_count == 10));
    // Declarations go on a channel of their own, so a refusal cannot
    // close one of the application's.
    answer(&mut peer, 2, "channel.open", spec::ChannelOpenOk::default());
    let exchange = answer(&mut peer, 2, "exchange.declare", spec::ExchangeDeclareOk {});
    assert!(
        matches!(exchange, Method::ExchangeDeclare(e) if e.exchange == "events" && e.exchange_type == "topic" && !e.nowait)
    );
    let server_named = answer(&mut peer, 2, "queue.declare", declare_ok("amq.gen-new"));
    assert!(matches!(server_named, Method::QueueDeclare(q) if q.queue.is_empty()));
    let jobs = answer(&mut peer, 2, "queue.declare", declare_ok("jobs"));
    assert!(matches!(jobs, Method::QueueDeclare(q) if q.queue == "jobs" && q.durable));
    let bind = answer(&mut peer, 2, "queue.bind", spec::QueueBindOk {});
    assert!(
        matches!(&bind, Method::QueueBind(b) if b.queue == "amq.gen-new" && b.routing_key == "audit.#"),
        "the binding follows the queue's new name: {bind:?}"
    );
    answer(&mut peer, 2, "channel.close", spec::ChannelCloseOk {});
    let first = answer(&mut peer, 1, "basic.consume", consume_ok("amq.ctag-1"));
    assert!(
        matches!(first, Method::BasicConsume(c) if c.queue == "jobs" && c.consumer_tag == "amq.ctag-1")
    );
    let second = answer(&mut peer, 1, "basic.consume", consume_ok("audit"));
    assert!(
        matches!(second, Method::BasicConsume(c) if c.queue == "amq.gen-new" && c.consumer_tag == "audit")
    );

    let events = peer.events();
    let renamed = vec![(
        ShortString::from("amq.gen-old"),
        ShortString::from("amq.gen-new"),
    )];
    assert!(
        matches!(events.as_slice(), [Event::Recovered { renamed_queues, failures }]
            if *renamed_queues == renamed && failures.is_empty()),
        "only the outcome reaches the application: {events:?}"
    );
    assert!(!peer.connection.is_recovering());
    let recorded = peer.connection.topology().unwrap();
    assert!(recorded.queues().iter().any(|q| q.name == "amq.gen-new"));
    assert!(recorded.queues().iter().all(|q| q.name != "amq.gen-old"));
}

fn fully_recovered() -> Peer {
    let mut peer = recovering(failed_connection());
    peer.events();
    answer(&mut peer, 1, "channel.open", spec::ChannelOpenOk::default());
    answer(&mut peer, 1, "confirm.select", spec::ConfirmSelectOk {});
    answer(&mut peer, 1, "basic.qos", spec::BasicQosOk {});
    answer(&mut peer, 2, "channel.open", spec::ChannelOpenOk::default());
    answer(&mut peer, 2, "exchange.declare", spec::ExchangeDeclareOk {});
    answer(&mut peer, 2, "queue.declare", declare_ok("amq.gen-new"));
    answer(&mut peer, 2, "queue.declare", declare_ok("jobs"));
    answer(&mut peer, 2, "queue.bind", spec::QueueBindOk {});
    answer(&mut peer, 2, "channel.close", spec::ChannelCloseOk {});
    answer(&mut peer, 1, "basic.consume", consume_ok("amq.ctag-1"));
    answer(&mut peer, 1, "basic.consume", consume_ok("audit"));
    assert!(matches!(
        peer.events().as_slice(),
        [Event::Recovered { .. }]
    ));
    peer
}

#[test]
fn delivery_tags_and_confirms_continue_across_the_recovery() {
    let mut peer = fully_recovered();
    // Publishes continue the old numbering; the broker counts from 1.
    assert_eq!(publish(&mut peer, 1), Some(3));
    peer.client_frames();
    peer.send(
        1,
        spec::BasicAck {
            delivery_tag: 1,
            multiple: false,
        },
    );
    assert!(matches!(
        peer.events().as_slice(),
        [Event::Confirm {
            channel: 1,
            sequence: 3,
            outcome: ConfirmOutcome::Ack
        }]
    ));
    // Deliveries are numbered after the three the application was given.
    deliver(&mut peer, 1, "amq.ctag-1", 1);
    let events = peer.events();
    assert!(
        matches!(events.as_slice(), [Event::Delivery(d)] if d.delivery_tag == 4),
        "{events:?}"
    );
    // An ack of a delivery from before the failure is dropped: the broker
    // requeued that message, and tag 2 on the new channel is another one.
    peer.connection.channel(1).unwrap().ack(2, false).unwrap();
    peer.connection
        .channel(1)
        .unwrap()
        .nack(3, true, true)
        .unwrap();
    assert!(peer.client_frames().is_empty());
    peer.connection.channel(1).unwrap().ack(4, false).unwrap();
    let sent = peer.expect_methods(&["basic.ack"]);
    assert!(matches!(&sent[0].1, Method::BasicAck(a) if a.delivery_tag == 1 && !a.multiple));
}

#[test]
fn stats_count_the_recovery_and_settlements_across_it() {
    let mut peer = fully_recovered();
    let recovered = peer.connection.stats();
    assert_eq!(recovered.recoveries, 1);
    // The declaring channel is closed again.
    assert_eq!((recovered.channels_open, recovered.consumers), (1, 2));
    assert_eq!((recovered.unsettled, recovered.acked), (0, 0));
    deliver(&mut peer, 1, "amq.ctag-1", 1);
    deliver(&mut peer, 1, "audit", 2);
    let tags: Vec<u64> = peer
        .events()
        .iter()
        .filter_map(|event| match event {
            Event::Delivery(delivery) => Some(delivery.delivery_tag),
            _ => None,
        })
        .collect();
    assert_eq!(tags, [4, 5]);
    assert_eq!(peer.connection.stats().unsettled, 2);
    // A delivery from before the failure: dropped, neither refused nor
    // counted (the broker requeued it).
    peer.connection.channel(1).unwrap().ack(3, false).unwrap();
    assert!(peer.client_frames().is_empty());
    assert_eq!(peer.connection.stats().acked, 0);
    assert_eq!(
        peer.connection.channel(1).unwrap().ack(6, false),
        Err(UsageError::UnknownDeliveryTag(6))
    );
    peer.connection.channel(1).unwrap().ack(5, true).unwrap();
    let sent = peer.expect_methods(&["basic.ack"]);
    assert!(matches!(&sent[0].1, Method::BasicAck(a) if a.delivery_tag == 2 && a.multiple));
    let settled = peer.connection.stats();
    assert_eq!((settled.acked, settled.unsettled), (2, 0));
}

#[test]
fn a_refused_declaration_is_reported_and_the_rest_still_recovers() {
    let mut peer = recovering(failed_connection());
    peer.events();
    answer(&mut peer, 1, "channel.open", spec::ChannelOpenOk::default());
    answer(&mut peer, 1, "confirm.select", spec::ConfirmSelectOk {});
    answer(&mut peer, 1, "basic.qos", spec::BasicQosOk {});
    answer(&mut peer, 2, "channel.open", spec::ChannelOpenOk::default());
    // The exchange now exists with another type: the server closes the
    // declarations channel; the replay reopens it and goes on.
    let refusal = spec::ChannelClose {
        reply_code: ReplyCode::PRECONDITION_FAILED.0,
        reply_text: "PRECONDITION_FAILED - inequivalent arg 'type'".into(),
        class_id: 40,
        method_id: 10,
    };
    answer(&mut peer, 2, "exchange.declare", refusal);
    peer.expect_methods(&["channel.close-ok", "channel.open"]);
    peer.send(2, spec::ChannelOpenOk::default());
    answer(&mut peer, 2, "queue.declare", declare_ok("amq.gen-new"));
    answer(&mut peer, 2, "queue.declare", declare_ok("jobs"));
    answer(&mut peer, 2, "queue.bind", spec::QueueBindOk {});
    answer(&mut peer, 2, "channel.close", spec::ChannelCloseOk {});
    // The first consumer's queue is gone: that closes channel 1, which the
    // application hears about; the second consumer is skipped with it.
    let not_found = spec::ChannelClose {
        reply_code: ReplyCode::NOT_FOUND.0,
        reply_text: "NOT_FOUND - no queue 'jobs'".into(),
        class_id: 60,
        method_id: 20,
    };
    answer(&mut peer, 1, "basic.consume", not_found);
    peer.expect_methods(&["channel.close-ok"]);
    let events = peer.events();
    let [Event::ChannelClosed { channel: 1, reason }, Event::Recovered { failures, .. }] =
        events.as_slice()
    else {
        panic!("unexpected events: {events:?}");
    };
    assert_eq!(reason.code, ReplyCode::NOT_FOUND);
    let refused: Vec<_> = failures
        .iter()
        .map(|failure| (failure.channel, failure.method))
        .collect();
    assert_eq!(refused, vec![(2, "exchange.declare"), (1, "basic.consume")]);
    assert_eq!(
        peer.connection.channel(1).err(),
        Some(UsageError::ChannelNotOpen(1))
    );
    let recorded = peer.connection.topology().unwrap();
    assert!(
        recorded.channels().is_empty(),
        "the lost channel is forgotten"
    );
}

#[test]
fn the_application_close_is_not_recoverable_and_records_nothing_more() {
    let mut peer = Peer::new(recording());
    peer.handshake(0);
    peer.open_channel();
    let now = peer.now;
    peer.connection
        .close(ReplyCode::REPLY_SUCCESS, "bye", now)
        .unwrap();
    peer.expect_methods(&["connection.close"]);
    peer.send(0, spec::ConnectionCloseOk {});
    let events = peer.events();
    assert!(matches!(events.as_slice(), [Event::Closed(error)] if !error.is_recoverable()));
}

#[test]
fn a_failure_during_the_replay_leaves_the_record_for_the_next_attempt() {
    let topology = failed_connection();
    let mut peer = recovering(topology.clone());
    peer.events();
    answer(&mut peer, 1, "channel.open", spec::ChannelOpenOk::default());
    peer.connection.handle_transport_closed("reset again");
    let events = peer.events();
    assert!(
        matches!(events.as_slice(), [Event::Closed(_)]),
        "the replay's own requests fail silently: {events:?}"
    );
    let again = peer.connection.topology().cloned().unwrap();
    assert_eq!(again.queues(), topology.queues());
    assert_eq!(again.bindings(), topology.bindings());
    let consumers = |t: &Topology| {
        t.channels()
            .iter()
            .map(|c| c.consumers.len())
            .sum::<usize>()
    };
    assert_eq!(consumers(&again), 2);
}

#[test]
fn an_empty_topology_recovers_at_open() {
    let mut peer = recovering(Topology::default());
    let events = peer.events();
    assert!(matches!(
        events.as_slice(),
        [Event::Opened { .. }, Event::Recovered { renamed_queues, failures }]
            if renamed_queues.is_empty() && failures.is_empty()
    ));
    assert!(peer.connection.open_channel().is_ok());
}

#[test]
fn cancelled_consumers_and_closed_channels_are_forgotten() {
    let mut peer = Peer::new(recording());
    peer.handshake(0);
    let first = peer.open_channel();
    let second = peer.open_channel();
    request(
        &mut peer,
        first,
        spec::BasicConsume {
            queue: "a".into(),
            consumer_tag: "mine".into(),
            ..Default::default()
        },
    );
    answer(&mut peer, first, "basic.consume", consume_ok("mine"));
    request(
        &mut peer,
        first,
        spec::BasicConsume {
            queue: "b".into(),
            consumer_tag: "theirs".into(),
            ..Default::default()
        },
    );
    answer(&mut peer, first, "basic.consume", consume_ok("theirs"));
    // The server cancels one (its queue was deleted), the client the other.
    peer.send(
        first,
        spec::BasicCancel {
            consumer_tag: "theirs".into(),
            nowait: true,
        },
    );
    request(
        &mut peer,
        first,
        spec::BasicCancel {
            consumer_tag: "mine".into(),
            nowait: false,
        },
    );
    peer.connection
        .channel(second)
        .unwrap()
        .close(ReplyCode::REPLY_SUCCESS, "done")
        .unwrap();
    peer.client_frames();
    peer.send(
        first,
        spec::BasicCancelOk {
            consumer_tag: "mine".into(),
        },
    );
    peer.send(second, spec::ChannelCloseOk {});
    let topology = peer.connection.topology().unwrap();
    let channels: Vec<_> = topology
        .channels()
        .iter()
        .map(|c| (c.id, c.consumers.len()))
        .collect();
    assert_eq!(channels, vec![(first, 0)]);
}

#[test]
fn a_channel_being_closed_when_the_connection_fails_is_not_recovered() {
    let mut peer = Peer::new(recording());
    peer.handshake(0);
    let kept = peer.open_channel();
    let closing = peer.open_channel();
    peer.connection
        .channel(closing)
        .unwrap()
        .close(ReplyCode::REPLY_SUCCESS, "done")
        .unwrap();
    peer.expect_methods(&["channel.close"]);
    // The close-ok never comes.
    peer.connection.handle_transport_closed("reset");
    let topology = peer.connection.topology().unwrap();
    let ids: Vec<u16> = topology.channels().iter().map(|c| c.id).collect();
    assert_eq!(ids, vec![kept]);
}

#[test]
fn a_recovered_channel_keeps_its_handle_and_new_openings_get_new_epochs() {
    let mut peer = Peer::new(recording());
    peer.handshake(0);
    peer.events();
    let kept = peer.connection.open_channel().expect("opens");
    answer(&mut peer, 1, "channel.open", spec::ChannelOpenOk::default());
    let closed = peer.connection.open_channel().expect("opens");
    answer(&mut peer, 2, "channel.open", spec::ChannelOpenOk::default());
    peer.connection
        .channel(closed)
        .unwrap()
        .close(ReplyCode::REPLY_SUCCESS, "done")
        .unwrap();
    answer(
        &mut peer,
        2,
        "channel.close",
        spec::ChannelCloseOk::default(),
    );
    peer.events();
    peer.connection.handle_transport_closed("reset by peer");
    let topology = peer.connection.topology().cloned().expect("recording");

    let mut peer = recovering(topology);
    peer.events();
    answer(&mut peer, 1, "channel.open", spec::ChannelOpenOk::default());
    assert!(matches!(
        peer.events().as_slice(),
        [Event::Recovered { .. }]
    ));
    assert!(
        peer.connection.channel(kept).is_ok(),
        "a handle from before the failure names the recovered channel"
    );
    assert_eq!(peer.connection.channel_handle(1), Some(kept));
    // Channel 2 was closed before the failure: its id is handed out again,
    // and the old handle must not name the new opening.
    let reopened = peer.connection.open_channel().expect("opens");
    assert_eq!(reopened.id(), closed.id());
    assert!(reopened.epoch() > closed.epoch());
    assert_eq!(
        peer.connection.channel(closed).err(),
        Some(UsageError::ChannelNotOpen(2))
    );
}

fn basic_ack_or_nack(peer: &mut Peer, channel: u16, delivery_tag: u64, ack: bool) {
    if ack {
        peer.send(
            channel,
            spec::BasicAck {
                delivery_tag,
                multiple: false,
            },
        );
    } else {
        peer.send(
            channel,
            spec::BasicNack {
                delivery_tag,
                multiple: false,
                requeue: false,
            },
        );
    }
}

/// Channel 1 in confirm mode with qos 10 and a consumer, on a recording
/// connection: what a channel reopened after nacks must get back.
fn confirming_channel(config: Config) -> Peer {
    let mut peer = Peer::new(config);
    peer.handshake(0);
    let channel = peer.open_channel();
    request(&mut peer, channel, spec::ConfirmSelect::default());
    answer(&mut peer, 1, "confirm.select", spec::ConfirmSelectOk {});
    let qos = spec::BasicQos {
        prefetch_count: 10,
        ..Default::default()
    };
    request(&mut peer, channel, qos);
    answer(&mut peer, 1, "basic.qos", spec::BasicQosOk {});
    let consume = spec::BasicConsume {
        queue: "jobs".into(),
        consumer_tag: "worker".into(),
        ..Default::default()
    };
    request(&mut peer, channel, consume);
    answer(&mut peer, 1, "basic.consume", consume_ok("worker"));
    peer.events();
    peer
}

#[test]
fn a_channel_nacked_before_any_ack_is_reopened_with_its_modes_and_consumers() {
    let mut peer = confirming_channel(recording());
    assert_eq!(publish(&mut peer, 1), Some(1));
    assert_eq!(publish(&mut peer, 1), Some(2));
    peer.expect_methods(&["basic.publish", "basic.publish"]);
    // RabbitMQ's answer to a channel whose first publish to a quorum queue
    // found no leader: a nack, and a nack for every publish after it.
    basic_ack_or_nack(&mut peer, 1, 1, false);
    let events = peer.events();
    assert!(
        matches!(
            events.as_slice(),
            [Event::Confirm {
                channel: 1,
                sequence: 1,
                outcome: ConfirmOutcome::Nack
            }]
        ),
        "{events:?}"
    );
    // The channel closes; until it is back, publishers wait.
    let sent = peer.expect_methods(&["channel.close"]);
    assert_eq!(sent[0].0, 1);
    assert_eq!(peer.connection.publish_readiness(1), Readiness::Recovering);
    assert!(!peer.connection.is_recovering(), "the other channels go on");
    peer.send(1, spec::ChannelCloseOk {});
    let events = peer.events();
    assert!(
        matches!(
            events.as_slice(),
            [
                Event::Confirm {
                    channel: 1,
                    sequence: 2,
                    outcome: ConfirmOutcome::Failed(Failure::Channel(_))
                },
                Event::ChannelRecovering { channel: 1, reason },
            ] if reason.initiator == amqp_proto::Initiator::Client
        ),
        "the publish outstanding at the close fails, and the channel is reopening: {events:?}"
    );
    answer(&mut peer, 1, "channel.open", spec::ChannelOpenOk::default());
    answer(&mut peer, 1, "confirm.select", spec::ConfirmSelectOk {});
    let qos = answer(&mut peer, 1, "basic.qos", spec::BasicQosOk {});
    assert!(matches!(qos, Method::BasicQos(qos) if qos.prefetch_count == 10));
    let consume = answer(&mut peer, 1, "basic.consume", consume_ok("worker"));
    assert!(matches!(consume, Method::BasicConsume(c) if c.consumer_tag == "worker"));
    let events = peer.events();
    assert!(
        matches!(
            events.as_slice(),
            [Event::ChannelRecovered { channel: 1, failures, .. }] if failures.is_empty()
        ),
        "{events:?}"
    );
    assert_eq!(peer.connection.publish_readiness(1), Readiness::Ready);
    // The numbering goes on; the new channel's first publish is the
    // broker's 1.
    assert_eq!(publish(&mut peer, 1), Some(3));
    peer.expect_methods(&["basic.publish"]);
    basic_ack_or_nack(&mut peer, 1, 1, true);
    let events = peer.events();
    assert!(
        matches!(
            events.as_slice(),
            [Event::Confirm {
                channel: 1,
                sequence: 3,
                outcome: ConfirmOutcome::Ack
            }]
        ),
        "{events:?}"
    );
    assert_eq!(peer.connection.stats().recoveries, 0);
}

#[test]
fn a_channel_that_had_acks_keeps_its_nacks_and_stays_open() {
    let mut peer = confirming_channel(recording());
    publish(&mut peer, 1);
    publish(&mut peer, 1);
    peer.expect_methods(&["basic.publish", "basic.publish"]);
    basic_ack_or_nack(&mut peer, 1, 1, true);
    basic_ack_or_nack(&mut peer, 1, 2, false);
    let events = peer.events();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(peer.client_frames().is_empty(), "nothing is closed");
    assert_eq!(peer.connection.publish_readiness(1), Readiness::Ready);
}

#[test]
fn without_reopening_a_nacked_channel_stays_as_it_is() {
    let mut peer = confirming_channel(recording().with_reopen_unacked_channels(false));
    publish(&mut peer, 1);
    peer.expect_methods(&["basic.publish"]);
    basic_ack_or_nack(&mut peer, 1, 1, false);
    assert_eq!(peer.events().len(), 1);
    assert!(peer.client_frames().is_empty(), "nothing is closed");
}

/// Until `Recovered` a recovered connection refuses commands with
/// `Recovering`, its handshake included (found by the simulation, seed 11:
/// they were refused with `NotOpen`, though `publish_readiness` said
/// `Recovering`).
#[test]
fn commands_wait_for_the_recovery_during_its_handshake_too() {
    let mut peer = Peer::new(recording());
    peer.connection = Connection::recover(recording(), failed_connection(), peer.now);
    assert!(peer.connection.is_recovering());
    assert_eq!(peer.connection.publish_readiness(1), Readiness::Recovering);
    assert_eq!(
        peer.connection.open_channel().err(),
        Some(UsageError::Recovering)
    );
    assert_eq!(
        peer.connection.channel(1).err(),
        Some(UsageError::Recovering)
    );
    assert_eq!(
        peer.connection.update_secret("token", "refresh").err(),
        Some(UsageError::Recovering)
    );
    // A connection that is not recovering still says it is not open yet.
    let mut fresh = Peer::new(Config::default());
    assert_eq!(
        fresh.connection.open_channel().err(),
        Some(UsageError::NotOpen)
    );
}

/// When the application's channels take every id the new server allows,
/// the declarations go first on one of those ids and close before the
/// application's channels reopen: opening an open id is a connection
/// error, which would fail every attempt (found by the simulation, seed
/// 8641: channel-max 2, two channels and a queue).
#[test]
fn declarations_go_first_when_the_application_has_every_channel_id() {
    let mut peer = Peer::new(recording());
    peer.handshake(0);
    for _ in 0..2 {
        peer.open_channel();
    }
    let jobs = spec::QueueDeclare {
        queue: "jobs".into(),
        ..Default::default()
    };
    request(&mut peer, 1, jobs);
    answer(&mut peer, 1, "queue.declare", declare_ok("jobs"));
    peer.connection.handle_transport_closed("reset");
    peer.events();
    let topology = peer.connection.topology().cloned().unwrap();

    let mut peer = Peer::new(recording());
    peer.connection = Connection::recover(recording(), topology, peer.now);
    peer.open_with_tune(2, support::SERVER_FRAME_MAX, 0);
    let mut sent = peer.expect_methods(&[
        "connection.start-ok",
        "connection.tune-ok",
        "connection.open",
        "channel.open",
    ]);
    assert_eq!(sent.pop().map(|(channel, _)| channel), Some(2));
    peer.events();
    peer.send(2, spec::ChannelOpenOk::default());
    answer(&mut peer, 2, "queue.declare", declare_ok("jobs"));
    answer(&mut peer, 2, "channel.close", spec::ChannelCloseOk {});
    answer(&mut peer, 1, "channel.open", spec::ChannelOpenOk::default());
    assert!(peer.events().is_empty(), "the replay's own events are its");
    answer(&mut peer, 2, "channel.open", spec::ChannelOpenOk::default());
    let events = peer.events();
    assert!(
        matches!(events.as_slice(), [Event::Recovered { failures, .. }] if failures.is_empty()),
        "{events:?}"
    );
    // Channel 2 is the application's again: its close is the application's.
    let close = spec::ChannelClose {
        reply_code: 406,
        reply_text: "PRECONDITION_FAILED".into(),
        class_id: 0,
        method_id: 0,
    };
    peer.send(2, close);
    peer.expect_methods(&["channel.close-ok"]);
    let events = peer.events();
    assert!(
        matches!(events.as_slice(), [Event::ChannelClosed { channel: 2, .. }]),
        "{events:?}"
    );
}
