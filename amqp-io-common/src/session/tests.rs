//! The session against a scripted server on simulated time: the policies
//! both adapters take from it, pinned here once, with no broker.

use std::time::{Duration, Instant};

use amqp_proto::codec::{encode_method_frame, BasicProperties, DecodeLimits, Frame, FrameDecoder};
use amqp_proto::spec::constants::ReplyCode;
use amqp_proto::spec::{self, Method};
use amqp_proto::{Backoff, ChannelHandle, Config, ConnectionError, Readiness};
use bytes::BytesMut;

use super::{Attach, Session};
use crate::recovery::RecoveryEvent;
use crate::Error;

/// An adapter that attaches nothing and wakes nobody.
struct Plain;

impl Attach for Plain {
    type Waker = ();
    type Channel = ();
    type Consumer = ();
    fn consumer_changed((): &mut ()) {}
    fn returns_changed((): &mut ()) {}
}

/// The session and the simulated clock, with a server's half of the wire.
struct Scripted {
    session: Session<Plain>,
    now: Instant,
    decoder: FrameDecoder,
    header_skipped: bool,
}

impl Scripted {
    fn new(config: Config, recovery: Option<Backoff>) -> Self {
        let now = Instant::now();
        Self {
            session: Session::new(config, now, recovery, None),
            now,
            decoder: FrameDecoder::new(DecodeLimits {
                max_frame_size: u32::MAX,
                ..DecodeLimits::default()
            }),
            header_skipped: false,
        }
    }

    /// The server sends `method` on `channel`; the session sorts what follows.
    fn send(&mut self, channel: u16, method: impl Into<Method>) {
        let mut bytes = BytesMut::new();
        encode_method_frame(channel, &method.into(), u32::MAX, &mut bytes).unwrap();
        self.session.core.handle_input(&bytes, self.now);
        self.session.dispatch(1, self.now);
    }

    /// The method names the client wrote since the last call.
    fn sent(&mut self) -> Vec<&'static str> {
        while let Some(chunk) = self.session.core.poll_transmit(self.now) {
            let mut chunk = &chunk[..];
            if !self.header_skipped && chunk.len() >= 8 {
                chunk = &chunk[8..];
                self.header_skipped = true;
            }
            self.decoder.extend_from_slice(chunk);
        }
        let mut names = Vec::new();
        while let Ok(Some(frame)) = self.decoder.decode() {
            if let Frame::Method { method, .. } = frame {
                names.push(method.name());
            }
        }
        names
    }

    fn open(&mut self, heartbeat: u16) {
        self.send(
            0,
            spec::ConnectionStart {
                version_major: 0,
                version_minor: 9,
                mechanisms: "PLAIN".into(),
                locales: "en_US".into(),
                ..Default::default()
            },
        );
        self.send(
            0,
            spec::ConnectionTune {
                channel_max: 16,
                frame_max: 131_072,
                heartbeat,
            },
        );
        self.send(0, spec::ConnectionOpenOk::default());
        self.sent();
        assert!(self.session.opened().is_some());
    }

    /// Opens a channel in confirm mode; its id and handle.
    fn confirming_channel(&mut self) -> (u16, ChannelHandle) {
        let channel = self.session.open_channel().unwrap();
        let id = channel.id();
        self.send(id, spec::ChannelOpenOk::default());
        assert!(matches!(
            self.session.poll_open(channel, || ()),
            Some(Ok(()))
        ));
        let request = self
            .session
            .request(channel, spec::ConfirmSelect::default().into())
            .unwrap()
            .unwrap();
        self.send(id, spec::ConfirmSelectOk {});
        assert!(self.session.poll_reply(request, || ()).is_some());
        self.sent();
        (id, channel)
    }

    fn publish(&mut self, id: u16) -> u64 {
        let publish = spec::BasicPublish::default();
        self.session
            .core
            .channel(id)
            .unwrap()
            .publish(&publish, &BasicProperties::default(), &b"m"[..])
            .unwrap()
            .unwrap()
    }
}

#[test]
fn a_full_confirm_window_resumes_at_half_for_every_adapter() {
    let mut config = Config::default();
    config.max_unconfirmed = 4;
    let mut scripted = Scripted::new(config, None);
    scripted.open(0);
    let (id, channel) = scripted.confirming_channel();
    for _ in 0..4 {
        scripted.publish(id);
    }
    assert_eq!(
        scripted.session.publish_readiness(channel),
        Readiness::ConfirmWindowFull
    );
    let ack = |tag| spec::BasicAck {
        delivery_tag: tag,
        multiple: false,
    };
    scripted.send(id, ack(1));
    assert_eq!(
        scripted.session.publish_readiness(channel),
        Readiness::ConfirmWindowFull,
        "three out: not yet half"
    );
    assert!(!scripted.session.take_window_opened());
    scripted.send(id, ack(2));
    assert!(
        scripted.session.take_window_opened(),
        "publishers are woken once"
    );
    assert_eq!(
        scripted.session.publish_readiness(channel),
        Readiness::Ready
    );
    // Below the window, readiness follows the core again at once.
    scripted.publish(id);
    assert_eq!(
        scripted.session.publish_readiness(channel),
        Readiness::Ready
    );
}

#[test]
fn refusals_are_kept_while_a_confirmation_lives() {
    let mut scripted = Scripted::new(Config::default(), None);
    scripted.open(0);
    let (id, channel) = scripted.confirming_channel();
    let first = scripted.publish(id);
    let second = scripted.publish(id);
    assert!(scripted
        .session
        .poll_confirm(channel, first, || ())
        .is_none());
    let mut bytes = BytesMut::new();
    let nack = spec::BasicNack {
        delivery_tag: first,
        multiple: false,
        requeue: false,
    };
    encode_method_frame(id, &nack.into(), u32::MAX, &mut bytes).unwrap();
    scripted.session.core.handle_input(&bytes, scripted.now);
    // One confirmation handle lives: the nack is kept for it.
    scripted.session.dispatch(1, scripted.now);
    assert!(matches!(
        scripted.session.poll_confirm(channel, first, || ()),
        Some(Err(Error::Nacked(1)))
    ));
    // With none alive, nothing is kept (nobody could ask).
    let nack = spec::BasicNack {
        delivery_tag: second,
        multiple: false,
        requeue: false,
    };
    let mut bytes = BytesMut::new();
    encode_method_frame(id, &nack.into(), u32::MAX, &mut bytes).unwrap();
    scripted.session.core.handle_input(&bytes, scripted.now);
    scripted.session.dispatch(0, scripted.now);
    assert!(matches!(
        scripted.session.poll_confirm(channel, second, || ()),
        Some(Ok(()))
    ));
}

#[test]
fn the_write_deadline_follows_the_negotiated_heartbeat() {
    let mut config = Config::default();
    config.heartbeat = 60;
    let mut scripted = Scripted::new(config.clone(), None);
    assert_eq!(scripted.session.write_timeout(), Duration::from_secs(120));
    scripted.open(5);
    assert_eq!(
        scripted.session.write_timeout(),
        Duration::from_secs(30),
        "twice 5 s is below the 30 s floor"
    );
    let mut scripted = Scripted::new(config, None);
    scripted.open(40);
    assert_eq!(scripted.session.write_timeout(), Duration::from_secs(80));
}

#[test]
fn a_failure_is_recovered_through_the_supervisor() {
    let backoff = Backoff {
        initial: Duration::from_secs(2),
        max: Duration::from_secs(2),
        max_attempts: Some(3),
    };
    let mut scripted = Scripted::new(Config::default(), Some(backoff));
    scripted.open(0);
    let (id, channel) = scripted.confirming_channel();
    scripted.session.core.handle_transport_closed("reset");
    scripted.session.dispatch(0, scripted.now);
    assert!(scripted.session.closed().is_none(), "not over: recovering");
    assert!(scripted.session.is_between_sockets());
    assert!(!scripted.session.wants_input());
    let due = scripted.session.reconnect_due().unwrap();
    assert!(due > scripted.now && due <= scripted.now + Duration::from_secs(2));
    assert!(matches!(
        scripted.session.take_recovery_events().as_slice(),
        [RecoveryEvent::Started { .. }]
    ));
    // Too early: nothing happens.
    assert!(!scripted.session.start_attempt(scripted.now));
    scripted.now = due;
    assert!(scripted.session.start_attempt(scripted.now));
    scripted.session.reconnected(scripted.now);
    scripted.header_skipped = false;
    scripted.decoder = FrameDecoder::new(DecodeLimits {
        max_frame_size: u32::MAX,
        ..DecodeLimits::default()
    });
    scripted.open(0);
    // The replay reopens channel 1 in confirm mode.
    scripted.send(id, spec::ChannelOpenOk::default());
    scripted.send(id, spec::ConfirmSelectOk {});
    assert!(matches!(
        scripted.session.take_recovery_events().as_slice(),
        [RecoveryEvent::Recovered { .. }]
    ));
    assert!(!scripted.session.is_recovering());
    assert!(
        scripted.session.channel(channel).is_ok(),
        "the handle works on"
    );
}

#[test]
fn closing_between_sockets_gives_up_at_once() {
    let mut scripted = Scripted::new(Config::default(), Some(Backoff::default()));
    scripted.open(0);
    scripted.confirming_channel();
    scripted.session.core.handle_transport_closed("reset");
    scripted.session.dispatch(0, scripted.now);
    assert!(scripted.session.is_between_sockets());
    let handshake = scripted
        .session
        .close(ReplyCode::REPLY_SUCCESS, "bye", scripted.now)
        .unwrap();
    assert!(!handshake, "no socket, nothing to say goodbye on");
    assert_eq!(
        scripted.session.closed(),
        Some(&ConnectionError::TransportClosed("reset".into()))
    );
    // Both adapters report the close as done: nothing is left open.
    assert!(matches!(
        scripted.session.close_outcome(handshake),
        Some(Ok(()))
    ));
    assert!(scripted.session.reconnect_due().is_none());
    assert!(matches!(
        scripted.session.take_recovery_events().as_slice(),
        [RecoveryEvent::Started { .. }, RecoveryEvent::GaveUp { .. }]
    ));
}

#[test]
fn a_reply_nobody_waits_for_is_given_back() {
    let mut scripted = Scripted::new(Config::default(), None);
    scripted.open(0);
    let (id, channel) = scripted.confirming_channel();
    let request = scripted
        .session
        .request(channel, spec::BasicGet::default().into())
        .unwrap()
        .unwrap();
    scripted.sent();
    // The caller timed out before the message came.
    scripted.session.abandon_reply(channel, request);
    let get_ok = spec::BasicGetOk {
        delivery_tag: 1,
        redelivered: false,
        exchange: "".into(),
        routing_key: "q".into(),
        message_count: 0,
    };
    let mut bytes = BytesMut::new();
    encode_method_frame(id, &get_ok.into(), u32::MAX, &mut bytes).unwrap();
    let header = amqp_proto::codec::ContentHeader::basic(0, BasicProperties::default());
    amqp_proto::codec::encode_header_frame(id, &header, u32::MAX, &mut bytes).unwrap();
    scripted.session.core.handle_input(&bytes, scripted.now);
    scripted.session.dispatch(0, scripted.now);
    assert_eq!(scripted.sent(), vec!["basic.reject"], "requeued for others");
}

#[test]
fn a_refused_delivery_is_reported_to_its_consumer_which_goes_on() {
    use std::collections::VecDeque;

    use amqp_proto::codec::{encode_header_frame, ContentHeader};

    use super::Polled;

    let mut config = Config::default();
    config.max_body_size = 4;
    let mut scripted = Scripted::new(config, None);
    scripted.open(0);
    let (id, channel) = scripted.confirming_channel();
    let (consumer, request) = scripted
        .session
        .consume(channel, spec::BasicConsume::default(), ())
        .unwrap();
    scripted.send(
        id,
        spec::BasicConsumeOk {
            consumer_tag: consumer.tag().clone(),
        },
    );
    assert!(scripted
        .session
        .poll_reply(request.unwrap(), || ())
        .is_some());
    scripted.sent();
    // A message over the body limit, then one within it.
    let mut bytes = BytesMut::new();
    for (delivery_tag, body) in [(1, &b"too long"[..]), (2, &b"ok"[..])] {
        let deliver = spec::BasicDeliver {
            consumer_tag: consumer.tag().clone(),
            delivery_tag,
            redelivered: false,
            exchange: "".into(),
            routing_key: "q".into(),
        };
        encode_method_frame(id, &deliver.into(), u32::MAX, &mut bytes).unwrap();
        let header = ContentHeader::basic(body.len() as u64, BasicProperties::default());
        encode_header_frame(id, &header, u32::MAX, &mut bytes).unwrap();
        Frame::Body {
            channel: id,
            payload: bytes::Bytes::copy_from_slice(body),
        }
        .encode(&mut bytes, u32::MAX)
        .unwrap();
    }
    scripted.session.core.handle_input(&bytes, scripted.now);
    scripted.session.dispatch(0, scripted.now);
    assert_eq!(
        scripted.sent(),
        vec!["basic.reject"],
        "the core rejected it"
    );
    let mut into = VecDeque::new();
    assert!(matches!(
        scripted
            .session
            .poll_consumer(&consumer, &mut into, |()| {}),
        Some(Polled::Refused(Error::MessageRefused(_)))
    ));
    // The consumer goes on with the next message.
    assert!(matches!(
        scripted
            .session
            .poll_consumer(&consumer, &mut into, |()| {}),
        Some(Polled::Deliveries)
    ));
    assert_eq!(
        into.pop_front().map(|delivery| delivery.delivery_tag),
        Some(2)
    );
    assert!(scripted
        .session
        .poll_consumer(&consumer, &mut into, |()| {})
        .is_none());
}

#[test]
fn a_request_timeout_is_kept_by_the_core_and_its_late_message_requeued() {
    let mut scripted = Scripted::new(Config::default(), None);
    scripted.open(0);
    let (id, channel) = scripted.confirming_channel();
    let request = scripted
        .session
        .request(channel, spec::BasicGet::default().into())
        .unwrap()
        .unwrap();
    scripted.sent();
    scripted
        .session
        .set_timeout(request, Duration::from_secs(5), scripted.now);
    assert_eq!(
        scripted.session.core_deadline(),
        Some(scripted.now + Duration::from_secs(5)),
        "the adapter's clock wakes at the request's deadline"
    );
    scripted.now += Duration::from_secs(5);
    scripted.session.handle_timeout(scripted.now);
    scripted.session.dispatch(1, scripted.now);
    let failure = scripted.session.poll_reply(request, || ());
    let error = Error::from_request_failure(
        failure.unwrap().unwrap_err(),
        "basic.get",
        Duration::from_secs(5),
    );
    assert!(
        matches!(error, Error::Timeout { operation: "basic.get", timeout } if timeout == Duration::from_secs(5)),
        "{error:?}"
    );

    // The message comes after all: the core requeues it, and the channel
    // goes on.
    let get_ok = spec::BasicGetOk {
        delivery_tag: 1,
        redelivered: false,
        exchange: "".into(),
        routing_key: "q".into(),
        message_count: 0,
    };
    let mut bytes = BytesMut::new();
    encode_method_frame(id, &get_ok.into(), u32::MAX, &mut bytes).unwrap();
    let header = amqp_proto::codec::ContentHeader::basic(0, BasicProperties::default());
    amqp_proto::codec::encode_header_frame(id, &header, u32::MAX, &mut bytes).unwrap();
    scripted.session.core.handle_input(&bytes, scripted.now);
    scripted.session.dispatch(1, scripted.now);
    assert_eq!(scripted.sent(), ["basic.reject"]);
    assert!(scripted.session.channel(channel).is_ok());
}

#[test]
fn an_open_timeout_closes_the_channel_and_frees_its_id() {
    let mut scripted = Scripted::new(Config::default(), None);
    scripted.open(0);
    let channel = scripted.session.open_channel().unwrap();
    assert_eq!(scripted.sent(), ["channel.open"]);
    scripted
        .session
        .set_open_timeout(channel, Duration::from_secs(2), scripted.now);
    scripted.now += Duration::from_secs(2);
    scripted.session.handle_timeout(scripted.now);
    scripted.session.dispatch(1, scripted.now);
    assert!(matches!(
        scripted.session.poll_open(channel, || ()),
        Some(Err(amqp_proto::Failure::TimedOut))
    ));
    assert_eq!(scripted.sent(), ["channel.close"]);
    scripted.send(channel.id(), spec::ChannelOpenOk::default());
    scripted.send(channel.id(), spec::ChannelCloseOk::default());
    assert!(scripted.sent().is_empty());
    assert!(scripted.session.channel(channel).is_err(), "forgotten");
    let reopened = scripted.session.open_channel().unwrap();
    assert_eq!(reopened.id(), channel.id(), "the id is free again");
}

#[test]
fn a_dropped_waiter_leaves_the_give_back_to_the_core() {
    let mut scripted = Scripted::new(Config::default(), None);
    scripted.open(0);
    let (id, channel) = scripted.confirming_channel();
    let consume = spec::BasicConsume {
        queue: "q".into(),
        consumer_tag: "worker".into(),
        ..Default::default()
    };
    let (_consumer, request) = scripted.session.consume(channel, consume, ()).unwrap();
    let request = request.unwrap();
    scripted.sent();
    scripted.session.abandon_reply(channel, request);
    scripted.send(
        id,
        spec::BasicConsumeOk {
            consumer_tag: "worker".into(),
        },
    );
    assert_eq!(scripted.sent(), ["basic.cancel"]);
    assert!(scripted.session.poll_reply(request, || ()).is_none());
}
