//! One channel's state: the FIFO of requests awaiting replies, the content
//! being assembled, consumers, publisher confirms, flow, and closing.

mod confirms;
mod handle;
mod key;
mod typed;
mod unsettled;

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

pub use handle::{ChannelRef, Settlement};
pub use key::{ChannelHandle, ChannelKey};
pub use typed::{Pending, Synchronous};

use crate::codec::{ContentAssembler, ContentHeader, ShortString};
use crate::connection::stats;
use crate::connection::Sink;
use crate::error::{CloseReason, ProtocolViolation, UsageError};
use crate::event::{
    ConfirmOutcome, Delivery, Event, Failure, GetMessage, RefusedMessage, RefusedOrigin, RequestId,
    Returned,
};
use crate::spec::{
    BasicCancelOk, BasicDeliver, BasicGetOk, BasicReturn, ChannelCloseOk, ChannelFlowOk, Method,
    MethodId,
};
use confirms::Confirms;
use unsettled::Unsettled;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// `channel.open` sent; requests may already be pipelined behind it.
    Opening,
    Open,
    /// We sent `channel.close` and wait for `close-ok`; everything else the
    /// server sends meanwhile is discarded (spec 2.2.4 / channel.close).
    Closing(CloseReason),
}

/// A request waiting for its reply.
#[derive(Debug)]
struct AwaitingReply {
    request: RequestId,
    replies: &'static [MethodId],
    /// For `basic.consume` and `basic.cancel`: the consumer tag named
    /// (empty when the server is to make one up). Their replies may lag
    /// behind later replies and are matched by it; see `handle_reply`.
    consumer_tag: Option<ShortString>,
    /// For `basic.consume` and `basic.get`: what they get needs no
    /// acknowledgement.
    no_ack: bool,
    /// When the caller stops waiting (see
    /// [`Connection::set_request_deadline`](crate::Connection::set_request_deadline)).
    deadline: Option<Instant>,
    /// Nobody waits for the reply any more: what it carries is given back
    /// to the broker and no event reports it (see
    /// [`Connection::abandon_request`](crate::Connection::abandon_request)).
    abandoned: bool,
    /// What the reply tells about streams.
    stream: StreamNote,
    /// For `basic.cancel`: a consume naming the same tag, sent after this
    /// cancel, was confirmed first (RabbitMQ sends each from its queue's
    /// process, so they may cross). This cancel's reply concerns the
    /// consumer before it and must not forget the new one.
    superseded: bool,
}

/// What a request's reply tells the connection about streams.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StreamNote {
    None,
    /// A `basic.consume` of this stream: its consumer is a stream's.
    Consume(ShortString),
    /// A `queue.declare` of a stream: the declare-ok names a stream.
    Declare,
    /// A `queue.delete` of this queue: it is no stream any more.
    Delete(ShortString),
}

/// The prefetch counts last asked for on a channel (`basic.qos`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Prefetch {
    /// For each new consumer (`global` false).
    pub(crate) consumer: u16,
    /// Shared by the channel's consumers (`global` true).
    pub(crate) global: u16,
}

impl AwaitingReply {
    /// True for a `basic.consume` awaiting its reply that named `tag`
    /// (the empty tag: one that let the server choose).
    fn named(&self, tag: &ShortString) -> bool {
        self.replies.contains(&crate::spec::BasicConsumeOk::ID)
            && self.consumer_tag.as_ref() == Some(tag)
    }

    /// True if `reply` answers this request.
    fn answered_by(&self, reply: &Method) -> bool {
        if !self.replies.contains(&reply.id()) {
            return false;
        }
        // consume-oks are matched by `named`, before this is asked.
        match (reply, &self.consumer_tag) {
            (Method::BasicCancelOk(ok), Some(tag)) => ok.consumer_tag == *tag,
            _ => true,
        }
    }
}

/// The method whose content is being assembled.
#[derive(Debug)]
enum ContentMethod {
    Deliver(BasicDeliver),
    Return(BasicReturn),
    /// The get-ok, and the `basic.get` it answers.
    GetOk(BasicGetOk, Answered),
}

/// A request whose reply has come, while the content that goes with it
/// is still being received.
#[derive(Debug)]
struct Answered {
    request: RequestId,
    no_ack: bool,
    abandoned: bool,
}

/// What abandoning a request asks of the connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Abandoned {
    /// No request of this channel by that id awaits its reply.
    Unknown,
    /// Marked: its reply will be given back when it comes.
    Marked,
    /// It was the channel's `channel.open`: the channel is closed at once
    /// (a channel nobody wants is not kept open).
    Open,
}

/// What the connection must do with a channel after a frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Disposition {
    Keep,
    /// The close handshake finished: forget the channel, free its id.
    Remove,
}

#[derive(Debug)]
pub(crate) struct Channel {
    id: u16,
    /// Which opening of `id` this is (see [`ChannelHandle`]).
    epoch: u64,
    state: State,
    pending: VecDeque<AwaitingReply>,
    content: ContentAssembler,
    content_method: Option<ContentMethod>,
    consumers: Vec<ShortString>,
    /// The consumers among them that consume without acknowledgements.
    no_ack_consumers: Vec<ShortString>,
    /// The consumers among them whose `basic.consume` or `basic.cancel`
    /// was abandoned: they are being cancelled, and what is delivered to
    /// them meanwhile goes back to the queue.
    abandoned_consumers: Vec<ShortString>,
    /// Why the content being received is skipped rather than kept.
    refused: Option<crate::DecodeError>,
    /// The body size announced for the content being kept, counted in the
    /// connection's bodies in progress until it completes.
    receiving: u64,
    confirms: Option<Confirms>,
    transactional: bool,
    flow_active: bool,
    /// Added to the server's delivery tags: nonzero on a channel recovered
    /// after a connection failure, so tags keep growing across connections
    /// and an acknowledgement of an older delivery can be told apart.
    delivery_tag_offset: u64,
    /// The highest delivery tag handed to the application (offset included).
    highest_delivery_tag: u64,
    /// Where publish sequence numbers continue from, likewise.
    sequence_offset: u64,
    /// Deliveries the application has yet to settle.
    unsettled: Unsettled,
    /// Consumers of streams, with their stream: RabbitMQ refuses a global
    /// prefetch beside them, and nacks and rejects of what they deliver.
    stream_consumers: Vec<(ShortString, ShortString)>,
    /// The deliveries among [`unsettled`](Self::unsettled) that came from
    /// streams.
    stream_unsettled: Unsettled,
    prefetch: Prefetch,
}

impl Channel {
    /// A channel whose `channel.open` (request `open`) was just sent.
    pub(crate) fn opening(handle: ChannelHandle, open: RequestId, max_body_size: u64) -> Self {
        Self::recovered(handle, open, max_body_size, 0, 0)
    }

    /// A channel reopened by recovery, numbering its deliveries after
    /// `delivery_tag_offset` and its publishes after `sequence_offset`.
    pub(crate) fn recovered(
        handle: ChannelHandle,
        open: RequestId,
        max_body_size: u64,
        delivery_tag_offset: u64,
        sequence_offset: u64,
    ) -> Self {
        let mut pending = VecDeque::new();
        pending.push_back(AwaitingReply {
            request: open,
            replies: crate::spec::ChannelOpen::REPLIES,
            consumer_tag: None,
            no_ack: false,
            deadline: None,
            abandoned: false,
            stream: StreamNote::None,
            superseded: false,
        });
        Self {
            id: handle.id(),
            epoch: handle.epoch(),
            state: State::Opening,
            pending,
            content: ContentAssembler::new(max_body_size),
            content_method: None,
            consumers: Vec::new(),
            no_ack_consumers: Vec::new(),
            abandoned_consumers: Vec::new(),
            refused: None,
            receiving: 0,
            confirms: None,
            transactional: false,
            flow_active: true,
            delivery_tag_offset,
            highest_delivery_tag: delivery_tag_offset,
            sequence_offset,
            unsettled: Unsettled::default(),
            stream_consumers: Vec::new(),
            stream_unsettled: Unsettled::default(),
            prefetch: Prefetch::default(),
        }
    }

    /// The opening this state belongs to.
    pub(crate) fn handle(&self) -> ChannelHandle {
        ChannelHandle::new(self.id, self.epoch)
    }

    /// The highest delivery tag the application was given.
    pub(crate) fn highest_delivery_tag(&self) -> u64 {
        self.highest_delivery_tag
    }

    /// True if the channel is in confirm mode and the broker has acked
    /// none of its publishes yet.
    pub(crate) fn has_no_ack_yet(&self) -> bool {
        self.confirms
            .as_ref()
            .is_some_and(|confirms| !confirms.has_acked())
    }

    /// The last publish sequence number given out.
    pub(crate) fn last_sequence(&self) -> u64 {
        self.confirms
            .as_ref()
            .map_or(self.sequence_offset, Confirms::last_sequence)
    }

    /// The server's tag for a delivery tag the application holds, or `None`
    /// for a delivery from before a recovery (it cannot be acknowledged
    /// any more; the broker requeued it). Tag 0 (with `multiple`: all) stays.
    pub(crate) fn wire_delivery_tag(&self, tag: u64) -> Option<u64> {
        match tag {
            0 => Some(0),
            tag if tag <= self.delivery_tag_offset => None,
            tag => Some(tag - self.delivery_tag_offset),
        }
    }

    fn delivery_tag(&mut self, wire: u64) -> u64 {
        let tag = wire.saturating_add(self.delivery_tag_offset);
        self.highest_delivery_tag = self.highest_delivery_tag.max(tag);
        tag
    }

    pub(crate) fn id(&self) -> u16 {
        self.id
    }

    pub(crate) fn is_closing(&self) -> bool {
        matches!(self.state, State::Closing(_))
    }

    /// Publishes awaiting confirmation.
    pub(crate) fn unconfirmed(&self) -> usize {
        self.confirms.as_ref().map_or(0, Confirms::unconfirmed)
    }

    /// True while the publish numbered `sequence` awaits confirmation.
    pub(crate) fn is_unconfirmed(&self, sequence: u64) -> bool {
        self.confirms
            .as_ref()
            .is_some_and(|confirms| confirms.is_outstanding(sequence))
    }

    pub(crate) fn flow_active(&self) -> bool {
        self.flow_active
    }

    fn violation(&self, method: &Method, why: &'static str) -> ProtocolViolation {
        ProtocolViolation::UnexpectedMethod {
            channel: self.id,
            method: method.name(),
            why,
        }
    }

    /// Handles a method the server sent on this channel.
    pub(crate) fn handle_method(
        &mut self,
        method: Method,
        sink: &mut Sink<'_>,
    ) -> Result<Disposition, ProtocolViolation> {
        // While closing, everything but the close handshake is discarded
        // (spec 2.2.4), content frames included, so a content cut short by
        // our close is no violation.
        if let State::Closing(reason) = &self.state {
            return Ok(match method {
                Method::ChannelCloseOk(_) => {
                    let reason = reason.clone();
                    self.finish_close(reason, sink);
                    Disposition::Remove
                }
                // Both sides closed at once: answer, and keep waiting for
                // the close-ok to ours so the id is not reused too early.
                Method::ChannelClose(_) => {
                    stats::add(&mut sink.stats.server_channel_closes, 1);
                    sink.send(self.id, &ChannelCloseOk {}.into());
                    Disposition::Keep
                }
                _ => Disposition::Keep,
            });
        }
        // Spec 4.2.6: a content-carrying method is followed by its header
        // and body frames and nothing else on the channel.
        if let Some(due) = self.content_due() {
            return Err(ProtocolViolation::ContentExpected {
                channel: self.id,
                method: method.name(),
                due,
            });
        }
        match method {
            Method::ChannelClose(close) => {
                stats::add(&mut sink.stats.server_channel_closes, 1);
                sink.send(self.id, &ChannelCloseOk {}.into());
                let reason = CloseReason::from_server(
                    close.reply_code,
                    &close.reply_text,
                    close.class_id,
                    close.method_id,
                );
                self.finish_close(reason, sink);
                Ok(Disposition::Remove)
            }
            Method::ChannelFlow(flow) => {
                if self.flow_active && !flow.active {
                    stats::add(&mut sink.stats.flow_pauses, 1);
                }
                self.flow_active = flow.active;
                sink.send(
                    self.id,
                    &ChannelFlowOk {
                        active: flow.active,
                    }
                    .into(),
                );
                sink.emit(Event::Flow {
                    channel: self.id,
                    active: flow.active,
                });
                Ok(Disposition::Keep)
            }
            Method::BasicDeliver(deliver) => {
                self.content_method = Some(ContentMethod::Deliver(deliver));
                Ok(Disposition::Keep)
            }
            Method::BasicReturn(returned) => {
                self.content_method = Some(ContentMethod::Return(returned));
                Ok(Disposition::Keep)
            }
            Method::BasicAck(ref ack) => {
                self.settle(&method, ack.delivery_tag, ack.multiple, true, sink)
            }
            Method::BasicNack(ref nack) => {
                self.settle(&method, nack.delivery_tag, nack.multiple, false, sink)
            }
            Method::BasicCancel(cancel) if self.consumers.contains(&cancel.consumer_tag) => {
                // RabbitMQ's consumer_cancel_notify: the server cancelled it.
                stats::add(&mut sink.stats.server_consumer_cancels, 1);
                let abandoned = self.abandoned_consumers.contains(&cancel.consumer_tag);
                self.forget_consumer(&cancel.consumer_tag);
                if !cancel.nowait {
                    let reply = BasicCancelOk {
                        consumer_tag: cancel.consumer_tag.clone(),
                    };
                    sink.send(self.id, &reply.into());
                }
                if abandoned {
                    return Ok(Disposition::Keep);
                }
                sink.emit(Event::ConsumerCancelled {
                    channel: self.id,
                    consumer_tag: cancel.consumer_tag,
                });
                Ok(Disposition::Keep)
            }
            // A cancel notification for a consumer we are cancelling
            // ourselves crossed our basic.cancel: our cancel-ok settles it.
            Method::BasicCancel(_) => Ok(Disposition::Keep),
            other => self.handle_reply(other, sink),
        }
    }

    /// Matches a reply with the oldest request waiting on this channel.
    fn handle_reply(
        &mut self,
        method: Method,
        sink: &mut Sink<'_>,
    ) -> Result<Disposition, ProtocolViolation> {
        // RabbitMQ sends consume-ok and cancel-ok from the queue's process,
        // not the channel's, so with pipelined requests they can arrive
        // after the replies to later requests: they are matched by consumer
        // tag wherever they wait, and other replies pass over them. Every
        // other reply answers the oldest request that is not a consume or
        // cancel, in order.
        let position = match &method {
            // The consume that named this tag, else the oldest that named
            // none: an unnamed consume must never take a named one's reply.
            Method::BasicConsumeOk(ok) => self
                .pending
                .iter()
                .position(|pending| pending.named(&ok.consumer_tag))
                .or_else(|| {
                    self.pending
                        .iter()
                        .position(|pending| pending.named(&ShortString::default()))
                }),
            Method::BasicCancelOk(_) => self
                .pending
                .iter()
                .position(|pending| pending.answered_by(&method)),
            _ => self
                .pending
                .iter()
                .position(|pending| pending.consumer_tag.is_none())
                .filter(|&index| {
                    self.pending
                        .get(index)
                        .is_some_and(|pending| pending.answered_by(&method))
                }),
        };
        let Some(AwaitingReply {
            request,
            no_ack,
            deadline,
            abandoned,
            stream,
            superseded,
            ..
        }) = position.and_then(|index| self.pending.remove(index))
        else {
            return Err(self.violation(&method, "no request on this channel awaits it"));
        };
        // Answered: its deadline no longer applies, even while the content
        // of a get-ok is still coming.
        sink.deadlines.remove(deadline, request);
        let supersedes = match &method {
            Method::BasicConsumeOk(ok) => {
                self.supersede_cancels(&ok.consumer_tag, position.unwrap_or(0))
            }
            _ => false,
        };
        match method {
            Method::ChannelOpenOk(_) => {
                self.state = State::Open;
                sink.emit(Event::ChannelOpened {
                    channel: self.id,
                    request,
                });
                return Ok(Disposition::Keep);
            }
            Method::BasicGetOk(get_ok) => {
                let answered = Answered {
                    request,
                    no_ack,
                    abandoned,
                };
                self.content_method = Some(ContentMethod::GetOk(get_ok, answered));
                return Ok(Disposition::Keep);
            }
            Method::BasicConsumeOk(ref consume_ok)
                if supersedes || !self.consumers.contains(&consume_ok.consumer_tag) =>
            {
                // A consumer by this tag still known is the one those
                // cancels stopped: this is a new one (its own `no_ack`).
                self.forget_consumer(&consume_ok.consumer_tag);
                self.add_consumer(&consume_ok.consumer_tag, no_ack);
                if let StreamNote::Consume(queue) = stream {
                    self.stream_consumers
                        .push((consume_ok.consumer_tag.clone(), queue));
                }
                if abandoned {
                    self.cancel_abandoned(consume_ok.consumer_tag.clone(), sink);
                }
            }
            Method::BasicCancelOk(ref cancel_ok) if !superseded => {
                self.forget_consumer(&cancel_ok.consumer_tag);
            }
            Method::BasicGetEmpty(_) => stats::add(&mut sink.stats.gets_empty, 1),
            Method::QueueDeclareOk(ref ok) if stream == StreamNote::Declare => {
                sink.streams.insert(ok.queue.clone());
            }
            Method::QueueDeleteOk(_) => {
                if let StreamNote::Delete(queue) = &stream {
                    sink.streams.remove(queue);
                }
            }
            _ => {}
        }
        if abandoned {
            // Nobody waits: what the reply carries was given back above.
            return Ok(Disposition::Keep);
        }
        sink.emit(Event::Reply {
            channel: self.id,
            request,
            method,
        });
        Ok(Disposition::Keep)
    }

    fn settle(
        &mut self,
        method: &Method,
        tag: u64,
        multiple: bool,
        ack: bool,
        sink: &mut Sink<'_>,
    ) -> Result<Disposition, ProtocolViolation> {
        let channel = self.id;
        let Some(confirms) = self.confirms.as_mut() else {
            return Err(self.violation(method, "the channel is not in confirm mode"));
        };
        let outcome = if ack {
            confirms.mark_acked();
            ConfirmOutcome::Ack
        } else {
            ConfirmOutcome::Nack
        };
        let settled = confirms.settle(tag, multiple, |sequence| {
            let counter = if ack {
                &mut sink.stats.confirms_acked
            } else {
                &mut sink.stats.confirms_nacked
            };
            stats::add(counter, 1);
            sink.emit(Event::Confirm {
                channel,
                sequence,
                outcome: outcome.clone(),
            });
        });
        match settled {
            Ok(()) => Ok(Disposition::Keep),
            Err(_) => Err(self.violation(method, "it settles a publish that was never made")),
        }
    }

    /// Handles a content header frame.
    pub(crate) fn handle_header(
        &mut self,
        header: Box<ContentHeader>,
        sink: &mut Sink<'_>,
    ) -> Result<Disposition, ProtocolViolation> {
        if self.is_closing() {
            return Ok(Disposition::Keep);
        }
        if self.content_method.is_none() || self.content.is_collecting() {
            return Err(ProtocolViolation::UnexpectedContent { channel: self.id });
        }
        let max = self.content.max_body_size();
        if header.body_size > max {
            let error = crate::DecodeError::BodyTooLarge {
                size: header.body_size,
                max,
            };
            return self.handle_refused_header(header.body_size, error, sink);
        }
        let in_progress = *sink.bodies_in_progress;
        if in_progress.saturating_add(header.body_size) > sink.max_bodies_in_progress {
            let error = crate::DecodeError::BodiesInProgressTooLarge {
                size: header.body_size,
                in_progress,
                max: sink.max_bodies_in_progress,
            };
            return self.handle_refused_header(header.body_size, error, sink);
        }
        self.receiving = header.body_size;
        *sink.bodies_in_progress += header.body_size;
        if let Some(content) = self.content.start(header)? {
            self.complete_content(content, sink);
        }
        Ok(Disposition::Keep)
    }

    /// Handles a content header that breaks a per-message limit: the
    /// content is read and dropped, and only that message is refused.
    pub(crate) fn handle_refused_header(
        &mut self,
        body_size: u64,
        error: crate::DecodeError,
        sink: &mut Sink<'_>,
    ) -> Result<Disposition, ProtocolViolation> {
        if self.is_closing() {
            return Ok(Disposition::Keep);
        }
        if self.content_method.is_none() || self.content.is_collecting() {
            return Err(ProtocolViolation::UnexpectedContent { channel: self.id });
        }
        self.refused = Some(error);
        if self.content.skip(body_size)? {
            let nothing = crate::codec::Content {
                header: Box::default(),
                body: Bytes::new(),
            };
            self.complete_content(nothing, sink);
        }
        Ok(Disposition::Keep)
    }

    /// Handles a content body frame.
    pub(crate) fn handle_body(
        &mut self,
        payload: Bytes,
        sink: &mut Sink<'_>,
    ) -> Result<Disposition, ProtocolViolation> {
        if self.is_closing() {
            return Ok(Disposition::Keep);
        }
        if !self.content.is_collecting() {
            return Err(ProtocolViolation::UnexpectedContent { channel: self.id });
        }
        if let Some(content) = self.content.push_body(payload)? {
            self.complete_content(content, sink);
        }
        Ok(Disposition::Keep)
    }

    fn complete_content(&mut self, content: crate::codec::Content, sink: &mut Sink<'_>) {
        self.release_body(sink);
        let awaits_settlement = self.count_arrival(sink);
        if let Some(error) = self.refused.take() {
            self.refuse_content(error, sink);
            return;
        }
        if self.give_back_content(sink) {
            return;
        }
        let channel = self.id;
        let weight = crate::connection::content_weight(&content);
        let event = match self.content_method.take() {
            Some(ContentMethod::Deliver(deliver)) => {
                let delivery_tag = self.handed_over(deliver.delivery_tag, awaits_settlement);
                if awaits_settlement && self.is_stream_consumer(&deliver.consumer_tag) {
                    // Remembered apart: RabbitMQ refuses nacks and
                    // rejects of a stream's deliveries.
                    self.stream_unsettled.delivered(delivery_tag);
                }
                Event::Delivery(Delivery {
                    channel,
                    consumer_tag: deliver.consumer_tag,
                    delivery_tag,
                    redelivered: deliver.redelivered,
                    exchange: deliver.exchange,
                    routing_key: deliver.routing_key,
                    content,
                })
            }
            Some(ContentMethod::Return(returned)) => Event::Returned(Box::new(Returned {
                channel,
                reply_code: returned.reply_code,
                reply_text: returned.reply_text,
                exchange: returned.exchange,
                routing_key: returned.routing_key,
                content,
            })),
            Some(ContentMethod::GetOk(get_ok, answered)) => Event::GetOk {
                channel,
                request: answered.request,
                message: Box::new(GetMessage {
                    delivery_tag: self.handed_over(get_ok.delivery_tag, awaits_settlement),
                    redelivered: get_ok.redelivered,
                    exchange: get_ok.exchange,
                    routing_key: get_ok.routing_key,
                    message_count: get_ok.message_count,
                    content,
                }),
            },
            // `handle_header` refuses content without a method first.
            None => return,
        };
        sink.emit_message(event, weight);
    }

    /// Resolves everything outstanding with `failure`: requests fail,
    /// unconfirmed publishes fail, a partial content is dropped.
    pub(crate) fn fail_outstanding(&mut self, failure: &Failure, sink: &mut Sink<'_>) {
        let channel = self.id;
        for pending in self.pending.drain(..) {
            sink.deadlines.remove(pending.deadline, pending.request);
            if !pending.abandoned {
                sink.emit(Event::RequestFailed {
                    channel,
                    request: pending.request,
                    failure: failure.clone(),
                });
            }
        }
        self.refused = None;
        if let Some(ContentMethod::GetOk(_, answered)) = self.content_method.take() {
            if !answered.abandoned {
                sink.emit(Event::RequestFailed {
                    channel,
                    request: answered.request,
                    failure: failure.clone(),
                });
            }
        }
        if let Some(confirms) = self.confirms.as_mut() {
            for sequence in confirms.drain() {
                sink.emit(Event::Confirm {
                    channel,
                    sequence,
                    outcome: ConfirmOutcome::Failed(failure.clone()),
                });
            }
        }
        self.content.reset();
        self.release_body(sink);
        self.consumers.clear();
        self.no_ack_consumers.clear();
        self.abandoned_consumers.clear();
        self.unsettled.clear();
        self.stream_consumers.clear();
        self.stream_unsettled.clear();
    }

    /// The content kept is complete or abandoned: its announced size no
    /// longer counts towards the connection's bodies in progress.
    fn release_body(&mut self, sink: &mut Sink<'_>) {
        *sink.bodies_in_progress = sink
            .bodies_in_progress
            .saturating_sub(std::mem::take(&mut self.receiving));
    }

    /// A refused content is complete: report it (unless nobody waits for
    /// it: the get or consumer was abandoned), and reject the message if
    /// it awaits an acknowledgement, so the broker does not hand it to the
    /// next consumer to fail the same way.
    fn refuse_content(&mut self, error: crate::DecodeError, sink: &mut Sink<'_>) {
        let channel = self.id;
        let reject = |sink: &mut Sink<'_>, delivery_tag: u64| {
            let reject = crate::spec::BasicReject {
                delivery_tag,
                requeue: false,
            };
            sink.send(channel, &reject.into());
            stats::add(&mut sink.stats.rejected, 1);
        };
        let origin = match self.content_method.take() {
            Some(ContentMethod::Deliver(deliver)) => {
                let awaits = !self.no_ack_consumers.contains(&deliver.consumer_tag);
                let stream = self.is_stream_consumer(&deliver.consumer_tag);
                // A stream keeps every message and RabbitMQ refuses a
                // reject of one (540 on the connection): it is acked, which
                // only makes room in the consumer's prefetch.
                let rejected = awaits && !stream;
                if rejected {
                    reject(sink, deliver.delivery_tag);
                } else if awaits {
                    let ack = crate::spec::BasicAck {
                        delivery_tag: deliver.delivery_tag,
                        multiple: false,
                    };
                    sink.send(channel, &ack.into());
                    stats::add(&mut sink.stats.acked, 1);
                }
                let delivery_tag = self.delivery_tag(deliver.delivery_tag);
                // A consumer being cancelled because its consume or cancel
                // was abandoned has nobody to tell, as an abandoned get's
                // refused message has not.
                if self.abandoned_consumers.contains(&deliver.consumer_tag) {
                    return;
                }
                (
                    RefusedOrigin::Delivery {
                        consumer_tag: deliver.consumer_tag,
                        delivery_tag,
                        redelivered: deliver.redelivered,
                    },
                    rejected,
                )
            }
            Some(ContentMethod::Return(returned)) => (
                RefusedOrigin::Return {
                    reply_code: returned.reply_code,
                },
                false,
            ),
            Some(ContentMethod::GetOk(get_ok, answered)) => {
                if !answered.no_ack {
                    reject(sink, get_ok.delivery_tag);
                }
                self.delivery_tag(get_ok.delivery_tag);
                if !answered.abandoned {
                    sink.emit(Event::RequestFailed {
                        channel,
                        request: answered.request,
                        failure: Failure::MessageRefused(error),
                    });
                }
                return;
            }
            None => return,
        };
        let (origin, rejected) = origin;
        sink.emit(Event::MessageRefused(Box::new(RefusedMessage {
            channel,
            origin,
            error,
            rejected,
        })));
    }

    fn add_consumer(&mut self, tag: &ShortString, no_ack: bool) {
        self.consumers.push(tag.clone());
        if no_ack {
            self.no_ack_consumers.push(tag.clone());
        }
    }

    /// A consume of `tag`, `sent_after` pending requests that were sent
    /// before it, is confirmed: those of them that cancel `tag` were read
    /// by the broker before the consume, so their replies are about the
    /// consumer before it. True if there was any.
    fn supersede_cancels(&mut self, tag: &ShortString, sent_after: usize) -> bool {
        let mut any = false;
        for pending in self.pending.iter_mut().take(sent_after) {
            let cancels = pending.replies.contains(&BasicCancelOk::ID);
            if cancels && pending.consumer_tag.as_ref() == Some(tag) {
                pending.superseded = true;
                any = true;
            }
        }
        any
    }

    fn forget_consumer(&mut self, tag: &ShortString) {
        self.consumers.retain(|known| known != tag);
        self.no_ack_consumers.retain(|known| known != tag);
        self.abandoned_consumers.retain(|known| known != tag);
        self.stream_consumers.retain(|(known, _)| known != tag);
    }

    fn is_stream_consumer(&self, tag: &ShortString) -> bool {
        self.stream_consumers.iter().any(|(known, _)| known == tag)
    }

    /// The prefetch counts last asked for.
    pub(crate) fn prefetch(&self) -> Prefetch {
        self.prefetch
    }

    /// A stream this channel consumes from (or has asked to), if any.
    pub(crate) fn consumed_stream(&self) -> Option<&ShortString> {
        self.stream_consumers
            .first()
            .map(|(_, queue)| queue)
            .or_else(|| {
                self.pending
                    .iter()
                    .find_map(|pending| match &pending.stream {
                        StreamNote::Consume(queue) => Some(queue),
                        _ => None,
                    })
            })
    }

    /// Refuses a `basic.nack` or `basic.reject` of `tag` (with `multiple`,
    /// of every tag up to it) that would name a delivery from a stream.
    pub(crate) fn check_requeue(&self, tag: u64, multiple: bool) -> Result<(), UsageError> {
        let streamed = if multiple {
            self.stream_unsettled.any_up_to(tag)
        } else {
            self.stream_unsettled.knows(tag, false)
        };
        if streamed {
            Err(UsageError::Stream(crate::error::StreamRefusal::Requeue {
                delivery_tag: tag,
            }))
        } else {
            Ok(())
        }
    }

    /// Gives back the content just completed if nobody wants it: a
    /// message for a consumer being cancelled because its consume was
    /// abandoned, or the message of an abandoned `basic.get`. It goes back
    /// to the queue (`basic.reject` with requeue) unless it was taken
    /// without acknowledgement, when the broker counts it as delivered and
    /// it is lost. True if it was given back.
    fn give_back_content(&mut self, sink: &mut Sink<'_>) -> bool {
        let (wire_tag, no_ack) = match &self.content_method {
            Some(ContentMethod::Deliver(deliver))
                if self.abandoned_consumers.contains(&deliver.consumer_tag) =>
            {
                let no_ack = self.no_ack_consumers.contains(&deliver.consumer_tag);
                (deliver.delivery_tag, no_ack)
            }
            Some(ContentMethod::GetOk(get_ok, answered)) if answered.abandoned => {
                (get_ok.delivery_tag, answered.no_ack)
            }
            _ => return false,
        };
        let stream = match &self.content_method {
            Some(ContentMethod::Deliver(deliver)) => self.is_stream_consumer(&deliver.consumer_tag),
            _ => false,
        };
        self.content_method = None;
        if stream && !no_ack {
            // Nothing leaves a stream, and RabbitMQ refuses a reject of
            // its messages (540 on the connection): the ack only makes
            // room in the prefetch until the cancel-ok.
            let ack = crate::spec::BasicAck {
                delivery_tag: wire_tag,
                multiple: false,
            };
            sink.send(self.id, &ack.into());
            stats::add(&mut sink.stats.acked, 1);
        } else if !no_ack {
            let reject = crate::spec::BasicReject {
                delivery_tag: wire_tag,
                requeue: true,
            };
            sink.send(self.id, &reject.into());
            stats::add(&mut sink.stats.rejected, 1);
            stats::add(&mut sink.stats.requeued, 1);
        }
        true
    }

    /// Cancels a consumer nobody wants (its `basic.consume` was
    /// abandoned) and waits for the cancel-ok, giving back what arrives
    /// for it meanwhile.
    fn cancel_abandoned(&mut self, tag: ShortString, sink: &mut Sink<'_>) {
        let cancel = crate::spec::BasicCancel {
            consumer_tag: tag.clone(),
            nowait: false,
        };
        sink.send(self.id, &cancel.into());
        self.abandoned_consumers.push(tag.clone());
        self.pending.push_back(AwaitingReply {
            request: sink.next_request_id(self.id),
            replies: crate::spec::BasicCancel::REPLIES,
            consumer_tag: Some(tag),
            no_ack: false,
            deadline: None,
            abandoned: true,
            stream: StreamNote::None,
            superseded: false,
        });
    }

    /// The request of this channel's `channel.open`, while its open-ok is
    /// awaited.
    pub(crate) fn open_request(&self) -> Option<RequestId> {
        if self.state != State::Opening {
            return None;
        }
        self.pending
            .iter()
            .find(|pending| pending.replies == crate::spec::ChannelOpen::REPLIES)
            .map(|pending| pending.request)
    }

    /// Sets when the caller stops waiting for `request`, replacing an
    /// earlier deadline. False if no request of this channel by that id
    /// awaits its reply.
    pub(crate) fn set_deadline(
        &mut self,
        request: RequestId,
        deadline: Instant,
        sink: &mut Sink<'_>,
    ) -> bool {
        let Some(pending) = self
            .pending
            .iter_mut()
            .find(|pending| pending.request == request && !pending.abandoned)
        else {
            return false;
        };
        sink.deadlines.remove(pending.deadline, request);
        pending.deadline = Some(deadline);
        sink.deadlines.insert(deadline, request);
        true
    }

    /// Nobody waits for `request`'s reply any more. What the reply carries
    /// is given back when it comes: a `basic.get`'s message is requeued, a
    /// `basic.consume`'s consumer is cancelled (and what it is delivered
    /// meanwhile requeued), an abandoned `basic.cancel` gives back what
    /// arrives until its cancel-ok; other replies are dropped. No event
    /// reports the request again.
    pub(crate) fn abandon(&mut self, request: RequestId, sink: &mut Sink<'_>) -> Abandoned {
        if let Some(ContentMethod::GetOk(_, answered)) = &mut self.content_method {
            if answered.request == request && !answered.abandoned {
                answered.abandoned = true;
                return Abandoned::Marked;
            }
        }
        let opening = self.open_request() == Some(request);
        let Some(pending) = self
            .pending
            .iter_mut()
            .find(|pending| pending.request == request && !pending.abandoned)
        else {
            return Abandoned::Unknown;
        };
        pending.abandoned = true;
        sink.deadlines.remove(pending.deadline.take(), request);
        if opening {
            return Abandoned::Open;
        }
        if pending.replies == crate::spec::BasicCancel::REPLIES {
            if let Some(tag) = pending.consumer_tag.clone() {
                if self.consumers.contains(&tag) && !self.abandoned_consumers.contains(&tag) {
                    self.abandoned_consumers.push(tag);
                }
            }
        }
        Abandoned::Marked
    }

    fn finish_close(&mut self, reason: CloseReason, sink: &mut Sink<'_>) {
        self.fail_outstanding(&Failure::Channel(reason.clone()), sink);
        sink.emit(Event::ChannelClosed {
            channel: self.id,
            reason,
        });
    }

    /// Records a request sent on this channel, and what sending it changes;
    /// `stream` says a `basic.consume` is of a stream.
    pub(crate) fn sent(&mut self, method: &Method, request: Option<RequestId>, stream: bool) {
        match method {
            Method::ConfirmSelect(_) if self.confirms.is_none() => {
                self.confirms = Some(Confirms::new(self.sequence_offset));
            }
            Method::TxSelect(_) => self.transactional = true,
            Method::BasicQos(qos) if qos.global => self.prefetch.global = qos.prefetch_count,
            Method::BasicQos(qos) => self.prefetch.consumer = qos.prefetch_count,
            Method::BasicConsume(consume) if consume.nowait => {
                self.add_consumer(&consume.consumer_tag, consume.no_ack);
                if stream {
                    self.stream_consumers
                        .push((consume.consumer_tag.clone(), consume.queue.clone()));
                }
            }
            Method::BasicCancel(cancel) if cancel.nowait => {
                self.forget_consumer(&cancel.consumer_tag);
            }
            _ => {}
        }
        if let Some(request) = request {
            let consumer_tag = match method {
                Method::BasicConsume(consume) => Some(consume.consumer_tag.clone()),
                Method::BasicCancel(cancel) => Some(cancel.consumer_tag.clone()),
                _ => None,
            };
            let no_ack = match method {
                Method::BasicConsume(consume) => consume.no_ack,
                Method::BasicGet(get) => get.no_ack,
                _ => false,
            };
            let stream = match method {
                Method::BasicConsume(consume) if stream => {
                    StreamNote::Consume(consume.queue.clone())
                }
                Method::QueueDeclare(declare)
                    if !declare.passive
                        && crate::queue::QueueType::of(&declare.arguments)
                            == Some(crate::queue::QueueType::Stream) =>
                {
                    StreamNote::Declare
                }
                Method::QueueDelete(delete) => StreamNote::Delete(delete.queue.clone()),
                _ => StreamNote::None,
            };
            self.pending.push_back(AwaitingReply {
                request,
                replies: method.replies(),
                consumer_tag,
                no_ack,
                deadline: None,
                abandoned: false,
                stream,
                superseded: false,
            });
        }
    }

    pub(crate) fn has_consumer(&self, tag: &ShortString) -> bool {
        !tag.is_empty() && self.consumers.contains(tag)
    }

    pub(crate) fn in_confirm_mode(&self) -> bool {
        self.confirms.is_some()
    }

    pub(crate) fn is_transactional(&self) -> bool {
        self.transactional
    }

    /// Records a publish; its confirm sequence number in confirm mode.
    pub(crate) fn record_publish(&mut self) -> Option<u64> {
        self.confirms.as_mut().map(Confirms::publish)
    }

    /// Starts closing from this side. A content being received is
    /// abandoned: its remaining frames are discarded like everything else
    /// but the close-ok. A `basic.get` whose message it was still fails
    /// when the close completes.
    ///
    /// Returns the announced size of the body abandoned, which no longer
    /// counts towards the connection's bodies in progress.
    pub(crate) fn start_close(&mut self, reason: CloseReason) -> u64 {
        self.content.reset();
        if !matches!(self.content_method, Some(ContentMethod::GetOk(..))) {
            self.content_method = None;
        }
        self.state = State::Closing(reason);
        // The broker requeues them when the close completes, and they can
        // no longer be settled from here.
        self.unsettled.clear();
        self.stream_unsettled.clear();
        std::mem::take(&mut self.receiving)
    }

    /// What the channel waits for while a content is being received: the
    /// header after a content-carrying method, or the rest of the body.
    fn content_due(&self) -> Option<&'static str> {
        if self.content.is_collecting() {
            Some("a content body frame")
        } else if self.content_method.is_some() {
            Some("a content header frame")
        } else {
            None
        }
    }
}
