//! Quorum queues and streams against the scripted broker: what RabbitMQ
//! refuses is refused before it is sent, the streams a connection declares
//! are remembered, and a channel the broker closes for a consumer timeout
//! is reopened with its consumers.

mod support;

use amqp_proto::codec::{BasicProperties, FieldTable};
use amqp_proto::error::StreamRefusal;
use amqp_proto::queue::{QueueArguments, QueueProperty, QueueType, StreamOffset};
use amqp_proto::spec::constants::ReplyCode;
use amqp_proto::spec::{self, Method};
use amqp_proto::{ChannelHandle, Config, Event, Readiness, UsageError};
use support::Peer;

const TIMEOUT_TEXT: &str = "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed \
     out. Timeout value used: 2000 ms. This timeout value can be configured, see consumers doc \
     guide to learn more";

fn open(config: Config) -> (Peer, ChannelHandle) {
    let mut peer = Peer::new(config);
    peer.handshake(0);
    let channel = peer.connection.open_channel().unwrap();
    peer.expect_methods(&["channel.open"]);
    peer.send(channel.id(), spec::ChannelOpenOk::default());
    peer.events();
    (peer, channel)
}

/// Sends `method` on `channel`; the outcome of the core's checks.
fn request(
    peer: &mut Peer,
    channel: ChannelHandle,
    method: impl Into<Method>,
) -> Result<(), UsageError> {
    peer.connection.channel(channel)?.request(method).map(drop)
}

/// The server answers the one method the client must have sent.
fn answer(peer: &mut Peer, name: &str, reply: impl Into<Method>) {
    let sent = peer.expect_methods(&[name]);
    peer.send(sent[0].0, reply);
}

fn declare_ok(queue: &str) -> spec::QueueDeclareOk {
    spec::QueueDeclareOk {
        queue: queue.into(),
        message_count: 0,
        consumer_count: 0,
    }
}

fn qos(prefetch_count: u16, global: bool) -> spec::BasicQos {
    spec::BasicQos {
        prefetch_size: 0,
        prefetch_count,
        global,
    }
}

fn consume(queue: &str, tag: &str) -> spec::BasicConsume {
    spec::BasicConsume {
        queue: queue.into(),
        consumer_tag: tag.into(),
        ..Default::default()
    }
}

fn deliver(peer: &mut Peer, channel: u16, tag: &str, delivery_tag: u64, offset: Option<i64>) {
    let deliver = spec::BasicDeliver {
        consumer_tag: tag.into(),
        delivery_tag,
        redelivered: false,
        exchange: "".into(),
        routing_key: "events".into(),
    };
    let properties = match offset {
        Some(offset) => {
            let headers: FieldTable = [("x-stream-offset", offset)].into_iter().collect();
            BasicProperties::default().headers(headers)
        }
        None => BasicProperties::default(),
    };
    peer.send_content(channel, deliver, properties, b"event");
}

fn deliveries(events: &[Event]) -> Vec<(u64, Option<u64>)> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Delivery(delivery) => Some((delivery.delivery_tag, delivery.stream_offset())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_quorum_queue_or_stream_that_would_not_outlive_its_connection_is_refused_unsent() {
    let (mut peer, channel) = open(Config::default());
    for (arguments, queue_type) in [
        (QueueArguments::quorum(), QueueType::Quorum),
        (QueueArguments::stream(), QueueType::Stream),
    ] {
        for (declare, property) in [
            (
                spec::QueueDeclare {
                    durable: false,
                    ..arguments.clone().declare("q")
                },
                QueueProperty::NonDurable,
            ),
            (
                spec::QueueDeclare {
                    exclusive: true,
                    ..arguments.clone().declare("q")
                },
                QueueProperty::Exclusive,
            ),
            (
                spec::QueueDeclare {
                    auto_delete: true,
                    ..arguments.clone().declare("q")
                },
                QueueProperty::AutoDelete,
            ),
        ] {
            assert_eq!(
                request(&mut peer, channel, declare),
                Err(UsageError::QueueProperty {
                    queue: "q".into(),
                    queue_type,
                    property,
                })
            );
        }
    }
    assert!(peer.client_frames().is_empty(), "nothing was sent");
    // The channel is as it was: a durable declaration goes out.
    request(&mut peer, channel, QueueArguments::quorum().declare("q")).unwrap();
    answer(&mut peer, "queue.declare", declare_ok("q"));
    assert!(matches!(peer.events().as_slice(), [Event::Reply { .. }]));
}

#[test]
fn what_rabbitmq_refuses_on_a_declared_stream_is_refused_unsent() {
    let (mut peer, channel) = open(Config::default());
    assert!(!peer.connection.is_declared_stream("events"));
    request(
        &mut peer,
        channel,
        QueueArguments::stream().declare("events"),
    )
    .unwrap();
    assert!(
        !peer.connection.is_declared_stream("events"),
        "known once the server confirms it"
    );
    answer(&mut peer, "queue.declare", declare_ok("events"));
    peer.events();
    assert!(peer.connection.is_declared_stream("events"));

    let refused = |refusal: StreamRefusal| Err(UsageError::Stream(refusal));
    let events = || "events".to_owned();
    // No consumer prefetch yet.
    assert_eq!(
        request(&mut peer, channel, consume("events", "c")),
        refused(StreamRefusal::NoPrefetch { queue: events() })
    );
    // A global one does not do.
    request(&mut peer, channel, qos(10, true)).unwrap();
    answer(&mut peer, "basic.qos", spec::BasicQosOk {});
    request(&mut peer, channel, qos(10, false)).unwrap();
    answer(&mut peer, "basic.qos", spec::BasicQosOk {});
    peer.events();
    assert_eq!(
        request(&mut peer, channel, consume("events", "c")),
        refused(StreamRefusal::GlobalQos { queue: events() })
    );
    request(&mut peer, channel, qos(0, true)).unwrap();
    answer(&mut peer, "basic.qos", spec::BasicQosOk {});
    peer.events();
    let no_ack = spec::BasicConsume {
        no_ack: true,
        ..consume("events", "c")
    };
    assert_eq!(
        request(&mut peer, channel, no_ack),
        refused(StreamRefusal::NoAck { queue: events() })
    );
    let get = spec::BasicGet {
        queue: "events".into(),
        ..Default::default()
    };
    assert_eq!(
        request(&mut peer, channel, get),
        refused(StreamRefusal::Get { queue: events() })
    );
    assert!(peer.client_frames().is_empty(), "no refusal was sent");

    // With acknowledgements and a consumer prefetch it goes out; a global
    // prefetch is refused beside it from then on.
    request(&mut peer, channel, consume("events", "c")).unwrap();
    assert_eq!(
        request(&mut peer, channel, qos(5, true)),
        refused(StreamRefusal::GlobalQos { queue: events() }),
        "refused while the consume-ok is awaited, too"
    );
    answer(
        &mut peer,
        "basic.consume",
        spec::BasicConsumeOk {
            consumer_tag: "c".into(),
        },
    );
    assert_eq!(
        request(&mut peer, channel, qos(5, true)),
        refused(StreamRefusal::GlobalQos { queue: events() })
    );
    request(&mut peer, channel, qos(0, true)).unwrap();
    answer(&mut peer, "basic.qos", spec::BasicQosOk {});

    deliver(&mut peer, channel.id(), "c", 1, Some(500));
    deliver(&mut peer, channel.id(), "c", 2, Some(501));
    let events_seen = peer.events();
    assert_eq!(deliveries(&events_seen), [(1, Some(500)), (2, Some(501))]);
    let settle = |peer: &mut Peer, how| peer.connection.channel(channel)?.settle(1, how);
    assert_eq!(
        settle(
            &mut peer,
            amqp_proto::Settlement::Nack {
                multiple: false,
                requeue: true
            }
        ),
        refused(StreamRefusal::Requeue { delivery_tag: 1 })
    );
    assert_eq!(
        settle(&mut peer, amqp_proto::Settlement::Reject { requeue: false }),
        refused(StreamRefusal::Requeue { delivery_tag: 1 })
    );
    assert_eq!(
        peer.connection
            .channel(channel)
            .unwrap()
            .nack(0, true, true),
        refused(StreamRefusal::Requeue { delivery_tag: 0 }),
        "nack everything names the stream's deliveries too"
    );
    assert!(peer.client_frames().is_empty());
    settle(&mut peer, amqp_proto::Settlement::Ack { multiple: true }).unwrap();
    let acked = peer.expect_methods(&["basic.ack"]);
    assert!(matches!(&acked[0].1, Method::BasicAck(ack) if ack.delivery_tag == 1));

    // A delivery of a classic queue's consumer on the same channel may be
    // nacked, unless a multiple nack would take a stream's along.
    request(&mut peer, channel, consume("jobs", "k")).unwrap();
    answer(
        &mut peer,
        "basic.consume",
        spec::BasicConsumeOk {
            consumer_tag: "k".into(),
        },
    );
    deliver(&mut peer, channel.id(), "k", 3, None);
    peer.events();
    assert_eq!(
        peer.connection
            .channel(channel)
            .unwrap()
            .nack(3, true, true),
        refused(StreamRefusal::Requeue { delivery_tag: 3 })
    );
    peer.connection
        .channel(channel)
        .unwrap()
        .nack(3, false, true)
        .unwrap();
    peer.expect_methods(&["basic.nack"]);

    // Deleted, it is a stream no more.
    let delete = spec::QueueDelete {
        queue: "events".into(),
        ..Default::default()
    };
    request(&mut peer, channel, delete).unwrap();
    answer(
        &mut peer,
        "queue.delete",
        spec::QueueDeleteOk { message_count: 0 },
    );
    peer.events();
    assert!(!peer.connection.is_declared_stream("events"));
}

#[test]
fn a_consume_with_an_offset_is_taken_for_a_stream_consume() {
    let (mut peer, channel) = open(Config::default());
    // Declared elsewhere: only the offset says it is a stream.
    let mut from_first = StreamOffset::First.consume("elsewhere");
    assert_eq!(
        request(&mut peer, channel, from_first.clone()),
        Err(UsageError::Stream(StreamRefusal::NoPrefetch {
            queue: "elsewhere".into()
        }))
    );
    // Without an offset the core cannot tell, and RabbitMQ decides.
    request(&mut peer, channel, consume("elsewhere", "plain")).unwrap();
    peer.expect_methods(&["basic.consume"]);
    request(&mut peer, channel, qos(1, false)).unwrap();
    peer.expect_methods(&["basic.qos"]);
    from_first.no_ack = true;
    assert_eq!(
        request(&mut peer, channel, from_first),
        Err(UsageError::Stream(StreamRefusal::NoAck {
            queue: "elsewhere".into()
        }))
    );
}

#[test]
fn what_nobody_takes_from_a_stream_is_acked_not_rejected() {
    let (mut peer, channel) = open(Config::default());
    request(&mut peer, channel, qos(10, false)).unwrap();
    answer(&mut peer, "basic.qos", spec::BasicQosOk {});
    peer.events();
    let (tag, consume) = peer
        .connection
        .channel(channel)
        .unwrap()
        .consume(StreamOffset::Next.consume("events"))
        .unwrap();
    // The caller gave up on it before the consume-ok came.
    assert!(peer.connection.abandon_request(consume.unwrap()));
    answer(
        &mut peer,
        "basic.consume",
        spec::BasicConsumeOk {
            consumer_tag: tag.clone(),
        },
    );
    peer.expect_methods(&["basic.cancel"]);
    deliver(&mut peer, channel.id(), &tag.to_string(), 1, Some(0));
    // A classic queue's message would be requeued with basic.reject,
    // which RabbitMQ refuses for a stream's by closing the connection.
    let sent = peer.expect_methods(&["basic.ack"]);
    assert!(matches!(&sent[0].1, Method::BasicAck(ack) if ack.delivery_tag == 1));
    assert!(peer.events().is_empty());
    assert!(peer.connection.is_open());
}

fn timeout_close() -> spec::ChannelClose {
    spec::ChannelClose {
        reply_code: ReplyCode::PRECONDITION_FAILED.0,
        reply_text: TIMEOUT_TEXT.into(),
        class_id: 0,
        method_id: 0,
    }
}

/// Channel 1 in confirm mode with a consumer prefetch of 1 and consumer
/// `c` on `jobs`, which was given delivery 1.
fn consuming(config: Config) -> (Peer, ChannelHandle) {
    let (mut peer, channel) = open(config);
    request(&mut peer, channel, spec::ConfirmSelect::default()).unwrap();
    answer(&mut peer, "confirm.select", spec::ConfirmSelectOk {});
    request(&mut peer, channel, qos(1, false)).unwrap();
    answer(&mut peer, "basic.qos", spec::BasicQosOk {});
    request(&mut peer, channel, consume("jobs", "c")).unwrap();
    answer(
        &mut peer,
        "basic.consume",
        spec::BasicConsumeOk {
            consumer_tag: "c".into(),
        },
    );
    deliver(&mut peer, channel.id(), "c", 1, None);
    let events = peer.events();
    assert_eq!(deliveries(&events), [(1, None)]);
    (peer, channel)
}

#[test]
fn without_reopening_a_consumer_timeout_closes_the_channel_with_a_reason_that_says_so() {
    let (mut peer, channel) = consuming(Config::default().with_record_topology(true));
    peer.send(1, timeout_close());
    peer.expect_methods(&["channel.close-ok"]);
    match peer.events().as_slice() {
        [Event::ChannelClosed { channel: 1, reason }] => {
            assert!(reason.is_consumer_timeout(), "{reason}");
            assert_eq!(
                reason.consumer_timeout(),
                Some(std::time::Duration::from_secs(2))
            );
        }
        other => panic!("expected the channel's close, got {other:?}"),
    }
    assert!(peer.connection.channel(channel).is_err());
    assert!(peer
        .connection
        .topology()
        .is_some_and(|topology| topology.channels().is_empty()));
}

#[test]
fn a_channel_closed_for_a_consumer_timeout_is_reopened_with_its_consumers() {
    let (mut peer, channel) = consuming(Config::default().with_reopen_timed_out_channels(true));
    let publish = spec::BasicPublish {
        routing_key: "jobs".into(),
        ..Default::default()
    };
    let sequence = peer
        .connection
        .channel(channel)
        .unwrap()
        .publish(&publish, &BasicProperties::default(), &b"unconfirmed"[..])
        .unwrap();
    assert_eq!(sequence, Some(1));
    peer.client_frames();

    peer.send(1, timeout_close());
    // The close is answered, and the channel opened again on the same id
    // with its mode and prefetch: one step at a time.
    peer.expect_methods(&["channel.close-ok", "channel.open"]);
    let events = peer.events();
    assert!(
        matches!(
            events.as_slice(),
            [
                Event::Confirm { channel: 1, sequence: 1, outcome: amqp_proto::ConfirmOutcome::Failed(_) },
                Event::ChannelRecovering { channel: 1, reason },
            ] if reason.is_consumer_timeout()
        ),
        "{events:?}"
    );
    // Meanwhile the channel is not the application's.
    assert_eq!(
        peer.connection.channel(channel).err(),
        Some(UsageError::Recovering)
    );
    assert_eq!(
        peer.connection.publish_readiness(channel),
        Readiness::Recovering
    );
    peer.send(1, spec::ChannelOpenOk::default());
    answer(&mut peer, "confirm.select", spec::ConfirmSelectOk {});
    let qos_sent = peer.expect_methods(&["basic.qos"]);
    assert!(matches!(&qos_sent[0].1, Method::BasicQos(q) if q.prefetch_count == 1 && !q.global));
    peer.send(1, spec::BasicQosOk {});
    let consume_sent = peer.expect_methods(&["basic.consume"]);
    assert!(
        matches!(&consume_sent[0].1, Method::BasicConsume(c) if c.consumer_tag == "c" && c.queue == "jobs"),
        "the same consumer tag"
    );
    assert!(peer.events().is_empty(), "the replay's replies are its own");
    peer.send(
        1,
        spec::BasicConsumeOk {
            consumer_tag: "c".into(),
        },
    );
    match peer.events().as_slice() {
        [Event::ChannelRecovered {
            channel: 1,
            reason,
            failures,
        }] => {
            assert!(reason.is_consumer_timeout());
            assert!(failures.is_empty(), "{failures:?}");
        }
        other => panic!("expected the channel back, got {other:?}"),
    }

    // The same handle works; the broker redelivers the message with a new
    // tag, numbered after the old ones, and acknowledging the old tag does
    // nothing (the broker requeued it).
    assert_eq!(peer.connection.publish_readiness(channel), Readiness::Ready);
    let mut redelivery = spec::BasicDeliver {
        consumer_tag: "c".into(),
        delivery_tag: 1,
        redelivered: true,
        exchange: "".into(),
        routing_key: "jobs".into(),
    };
    redelivery.redelivered = true;
    peer.send_content(1, redelivery, BasicProperties::default(), b"job");
    let events = peer.events();
    assert_eq!(deliveries(&events), [(2, None)]);
    peer.connection
        .channel(channel)
        .unwrap()
        .ack(1, false)
        .unwrap();
    assert!(peer.client_frames().is_empty(), "the old tag is dropped");
    peer.connection
        .channel(channel)
        .unwrap()
        .ack(2, false)
        .unwrap();
    let acked = peer.expect_methods(&["basic.ack"]);
    assert!(matches!(&acked[0].1, Method::BasicAck(ack) if ack.delivery_tag == 1));
    // Publishing continues after the failed publish's number.
    let sequence = peer
        .connection
        .channel(channel)
        .unwrap()
        .publish(&publish, &BasicProperties::default(), &b"next"[..])
        .unwrap();
    assert_eq!(sequence, Some(2));

    // The record is intact: a connection recovery would bring it back too.
    let topology = peer.connection.topology().cloned().unwrap_or_default();
    let recorded = topology.channels();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].consumers.len(), 1);
}

#[test]
fn a_second_timeout_before_the_consumers_are_back_closes_the_channel() {
    let (mut peer, channel) = consuming(Config::default().with_reopen_timed_out_channels(true));
    peer.send(1, timeout_close());
    peer.expect_methods(&["channel.close-ok", "channel.open"]);
    peer.events();
    peer.send(1, spec::ChannelOpenOk::default());
    answer(&mut peer, "confirm.select", spec::ConfirmSelectOk {});
    answer(&mut peer, "basic.qos", spec::BasicQosOk {});
    peer.expect_methods(&["basic.consume"]);
    peer.send(1, timeout_close());
    peer.expect_methods(&["channel.close-ok"]);
    let events = peer.events();
    assert!(
        matches!(
            events.as_slice(),
            [
                Event::ChannelClosed { channel: 1, .. },
                Event::ChannelRecovered { channel: 1, failures, .. },
            ] if failures.len() == 1
        ),
        "{events:?}"
    );
    assert!(peer.connection.channel(channel).is_err());
    assert!(peer.connection.is_open(), "only the channel is gone");
}

#[test]
fn other_closes_of_a_recorded_channel_are_not_reopened() {
    let (mut peer, _channel) = consuming(Config::default().with_reopen_timed_out_channels(true));
    peer.send(
        1,
        spec::ChannelClose {
            reply_code: ReplyCode::PRECONDITION_FAILED.0,
            reply_text: "PRECONDITION_FAILED - unknown delivery tag 9".into(),
            class_id: 60,
            method_id: 80,
        },
    );
    peer.expect_methods(&["channel.close-ok"]);
    assert!(matches!(
        peer.events().as_slice(),
        [Event::ChannelClosed { channel: 1, .. }]
    ));
}

#[test]
fn giving_back_requeues_a_queue_s_delivery_and_acks_a_stream_s() {
    let (mut peer, channel) = open(Config::default());
    request(&mut peer, channel, qos(10, false)).unwrap();
    answer(&mut peer, "basic.qos", spec::BasicQosOk {});
    for (consume, tag) in [
        (StreamOffset::First.consume("events"), "s"),
        (consume("jobs", "q"), "q"),
    ] {
        let consume = spec::BasicConsume {
            consumer_tag: tag.into(),
            ..consume
        };
        request(&mut peer, channel, consume).unwrap();
        answer(
            &mut peer,
            "basic.consume",
            spec::BasicConsumeOk {
                consumer_tag: tag.into(),
            },
        );
    }
    deliver(&mut peer, channel.id(), "s", 1, Some(0));
    deliver(&mut peer, channel.id(), "q", 2, None);
    peer.events();
    peer.connection
        .channel(channel)
        .unwrap()
        .give_back(1)
        .unwrap();
    peer.connection
        .channel(channel)
        .unwrap()
        .give_back(2)
        .unwrap();
    let sent = peer.expect_methods(&["basic.ack", "basic.reject"]);
    assert!(matches!(&sent[0].1, Method::BasicAck(ack) if ack.delivery_tag == 1));
    assert!(
        matches!(&sent[1].1, Method::BasicReject(reject) if reject.delivery_tag == 2 && reject.requeue)
    );
}
