//! The invariants checked after every step, from what the application was
//! told (events) against what it asked for and what the broker did.
//!
//! Request ids: the core numbers its requests 1, 2, 3, ... in the order
//! they are made (`RequestId::sequence`), its own included: the
//! `basic.cancel` it sends for an abandoned consume takes a number the
//! application never sees. The oracle learns every id the application is
//! handed (a channel's open through `ChannelRef::open_request`) and
//! takes the numbers skipped for the core's own requests, which the
//! broker's log must show to be cancels, or the steps of reopening a
//! channel the core closed after nacks before any ack (`channel.open`,
//! `confirm.select`, `basic.qos`, `basic.consume` on that channel). A
//! reopened channel is a new incarnation for the broker within the same
//! life for the application, its delivery tags and publish numbers offset
//! by what the core's record says, which must continue after everything
//! the application was given. The n-th request frame the
//! broker read is the n-th request made (the client writes one ordered
//! stream), so the broker's log says what the reply to each id must be.
//!
//! A request the application abandoned, or whose deadline failed it with
//! `Failure::TimedOut`, is *given up*: nothing may answer it any more,
//! and what its reply carries must go back to the broker (see
//! [`Oracle::quiet`] and `Sim::check_conservation`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use amqp_proto::spec::Method;
use amqp_proto::{ConfirmOutcome, ConnectionError, Event, Failure, RefusedOrigin, RequestId};

use crate::broker::Log;

mod recovery;

/// A broken invariant: a stable name (used to compare failures when
/// shrinking) and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The invariant's name.
    pub invariant: &'static str,
    /// What was observed.
    pub detail: String,
}

impl Violation {
    pub(crate) fn new(invariant: &'static str, detail: impl Into<String>) -> Self {
        Self {
            invariant,
            detail: detail.into(),
        }
    }
}

/// What the core made on its own: a `basic.cancel` for an abandoned
/// consume, or a step of reopening a channel.
const OWN_CANCEL: &str = "the core's own request";

/// The requests the core makes itself to reopen a channel under its
/// handle (after nacks before any ack): the channel's opening, mode, qos
/// and consumers.
const REOPEN_STEPS: [&str; 4] = [
    "channel.open",
    "confirm.select",
    "basic.qos",
    "basic.consume",
];

/// One request the application (or the core, [`OWN_CANCEL`]) made.
#[derive(Debug)]
struct Issued {
    channel: u16,
    incarnation: u32,
    name: &'static str,
    resolved: bool,
    /// Nobody waits for it: abandoned by the application, or one of the
    /// core's own. No event may answer it.
    abandoned: bool,
    /// The deadline last set on it.
    deadline: Option<Instant>,
}

impl Issued {
    fn outstanding(&self) -> bool {
        !self.resolved && !self.abandoned
    }
}

/// One life of a channel id, from `open_channel` to its close.
#[derive(Debug, Default)]
struct Life {
    /// The broker's: how many times the id was opened, reopenings by the
    /// core included. The application's life goes on across a reopening.
    incarnation: u32,
    opened: bool,
    closed: bool,
    unconfirmed: BTreeSet<u64>,
    /// What the core adds to the broker's delivery tags and publish
    /// sequence numbers of this incarnation: a reopened channel continues
    /// the application's numbering.
    tag_offset: u64,
    sequence_offset: u64,
    /// The highest publish sequence number and delivery tag the
    /// application was given in this life: a reopening must continue
    /// after them.
    last_sequence: u64,
    last_tag: u64,
}

/// The invariants' bookkeeping.
#[derive(Debug, Default)]
pub(crate) struct Oracle {
    /// Indexed by request id - 1.
    issued: Vec<Issued>,
    lives: BTreeMap<u16, Life>,
    incarnations: BTreeMap<u16, u32>,
    /// (channel, incarnation, delivery tag) of the deliveries seen.
    delivered: BTreeSet<(u16, u32, u64)>,
    /// How many returns each (channel, incarnation) reported.
    returned: BTreeMap<(u16, u32), usize>,
    closed: Option<ConnectionError>,
    /// (channel, incarnation, delivery tag) of the get-oks the
    /// application was given.
    got: BTreeSet<(u16, u32, u64)>,
    /// Requests with a deadline that were outstanding when last looked at,
    /// by index, with whether `handle_timeout` has since run at or after it.
    deadlines: BTreeMap<usize, (Instant, bool)>,
    /// Indices of the requests given up: abandoned, or failed with
    /// `TimedOut` (which abandons them in the core).
    given_up: BTreeSet<usize>,
    /// Channels the core reopened on its own at least once.
    reopened: BTreeSet<u16>,
    /// For a connection made by `Connection::recover`: what it owes.
    recovery: Option<recovery::Recovery>,
}

type Checked = Result<(), Violation>;

impl Oracle {
    /// The connection's end, once [`Event::Closed`] was seen.
    pub(crate) fn closed(&self) -> Option<&ConnectionError> {
        self.closed.as_ref()
    }

    fn incarnation(&self, channel: u16) -> u32 {
        self.lives.get(&channel).map_or(0, |life| life.incarnation)
    }

    fn push(&mut self, channel: u16, name: &'static str) {
        let incarnation = self.incarnation(channel);
        self.issued.push(Issued {
            channel,
            incarnation,
            name,
            resolved: false,
            abandoned: false,
            deadline: None,
        });
    }

    /// The application was handed `request` for a `name`: the numbers
    /// skipped since the last one went to the core's own requests, which
    /// the broker must have read as `basic.cancel`s (when it read them).
    fn numbered(&mut self, name: &'static str, request: RequestId, log: &Log) -> Checked {
        let expected = self.issued.len() as u64 + 1;
        if request.sequence() < expected {
            return Err(Violation::new(
                "request-numbering",
                format!(
                    "{name} got request id {}, expected {expected} or later",
                    request.sequence()
                ),
            ));
        }
        while (self.issued.len() as u64 + 1) < request.sequence() {
            let index = self.issued.len();
            let read = log.requests.get(index);
            let replayed = self
                .recovery
                .as_ref()
                .and_then(|recovery| recovery.replay_end)
                .is_some_and(|end| index < end);
            let own = |entry: &&crate::broker::RequestLog| {
                replayed
                    || entry.name == "basic.cancel"
                    || (self.reopened.contains(&entry.channel)
                        && REOPEN_STEPS.contains(&entry.name))
            };
            if let Some(entry) = read.filter(|entry| !own(entry)) {
                return Err(Violation::new(
                    "request-numbering",
                    format!(
                        "{name} got request id {}: the core made request {} itself, a {} on channel {} (reopened: {:?})",
                        request.sequence(),
                        index + 1,
                        entry.name,
                        entry.channel,
                        self.reopened
                    ),
                ));
            }
            let channel = read.map_or(0, |entry| entry.channel);
            self.push(channel, OWN_CANCEL);
            if let Some(own) = self.issued.last_mut() {
                own.abandoned = true;
            }
        }
        Ok(())
    }

    /// The core is reopening `channel` under its handle
    /// ([`Event::ChannelRecovering`]): the broker sees a new incarnation,
    /// whose delivery tags and publish numbers the core offsets by what
    /// its record says.
    pub(crate) fn reopening(
        &mut self,
        channel: u16,
        tag_offset: u64,
        sequence_offset: u64,
    ) -> Checked {
        let count = self.incarnations.entry(channel).or_insert(0);
        *count += 1;
        let incarnation = *count;
        self.reopened.insert(channel);
        let Some(life) = self.lives.get_mut(&channel) else {
            return Err(Violation::new(
                "channel-lifecycle",
                format!("ChannelRecovering for channel {channel}, never opened"),
            ));
        };
        if sequence_offset < life.last_sequence || tag_offset < life.last_tag {
            return Err(Violation::new(
                "numbering-continues",
                format!(
                    "channel {channel} reopened numbering publishes after {sequence_offset} and deliveries after {tag_offset}; the application was given up to {} and {}",
                    life.last_sequence, life.last_tag
                ),
            ));
        }
        life.incarnation = incarnation;
        life.tag_offset = tag_offset;
        life.sequence_offset = sequence_offset;
        Ok(())
    }

    /// True if `tag` on `channel` is a delivery from before the channel's
    /// recovery or reopening (tag 0, "all" with `multiple`, is none).
    pub(crate) fn is_stale(&self, channel: u16, tag: u64) -> bool {
        tag != 0
            && self
                .lives
                .get(&channel)
                .is_some_and(|life| tag <= life.tag_offset)
    }

    /// The broker's delivery tag for the application's `tag` on `channel`.
    pub(crate) fn wire_tag(&self, channel: u16, tag: u64) -> u64 {
        let offset = self.lives.get(&channel).map_or(0, |life| life.tag_offset);
        tag.saturating_sub(offset)
    }

    fn wire_sequence(&self, channel: u16, sequence: u64) -> u64 {
        let offset = self
            .lives
            .get(&channel)
            .map_or(0, |life| life.sequence_offset);
        sequence.saturating_sub(offset)
    }

    /// `open_channel` returned `channel`, whose `channel.open` is `request`.
    pub(crate) fn opened_channel(
        &mut self,
        channel: u16,
        request: Option<RequestId>,
        log: &Log,
    ) -> Checked {
        let Some(request) = request else {
            return Err(Violation::new(
                "request-numbering",
                format!("channel {channel} just opened has no open_request"),
            ));
        };
        self.numbered("channel.open", request, log)?;
        if self.lives.get(&channel).is_some_and(|life| !life.closed) {
            return Err(Violation::new(
                "channel-lifecycle",
                format!("open_channel reused channel {channel} before its ChannelClosed"),
            ));
        }
        let count = self.incarnations.entry(channel).or_insert(0);
        *count += 1;
        let incarnation = *count;
        self.lives.insert(
            channel,
            Life {
                incarnation,
                ..Life::default()
            },
        );
        self.push(channel, "channel.open");
        Ok(())
    }

    /// A request returned `request`.
    pub(crate) fn requested(
        &mut self,
        channel: u16,
        name: &'static str,
        request: RequestId,
        log: &Log,
    ) -> Checked {
        self.numbered(name, request, log)?;
        self.push(channel, name);
        Ok(())
    }

    fn issued_mut(&mut self, request: RequestId, what: &str) -> Result<&mut Issued, Violation> {
        let index = index_of(request);
        self.issued.get_mut(index).ok_or_else(|| {
            Violation::new(
                "unknown-request",
                format!("{what} of request {}, never made", request.sequence()),
            )
        })
    }

    /// `abandon_request(request)` returned `returned`: true exactly when
    /// the request was still outstanding.
    pub(crate) fn abandoned(&mut self, request: RequestId, returned: bool) -> Checked {
        let issued = self.issued_mut(request, "abandon_request")?;
        let outstanding = issued.outstanding();
        if returned != outstanding {
            return Err(Violation::new(
                "abandon-result",
                format!(
                    "abandon_request of request {} ({}) returned {returned}; it was {}",
                    request.sequence(),
                    issued.name,
                    if outstanding {
                        "outstanding"
                    } else {
                        "resolved or abandoned"
                    },
                ),
            ));
        }
        if returned {
            issued.abandoned = true;
            self.given_up.insert(index_of(request));
        }
        Ok(())
    }

    /// `set_request_deadline(request, deadline)` returned `returned`: true
    /// exactly when the request was still outstanding, except that a
    /// `basic.get` whose get-ok came is answered while its content is
    /// still coming.
    pub(crate) fn deadline_set(
        &mut self,
        request: RequestId,
        deadline: Instant,
        returned: bool,
    ) -> Checked {
        let issued = self.issued_mut(request, "set_request_deadline")?;
        let outstanding = issued.outstanding();
        let answered_get = issued.name == "basic.get";
        if returned != outstanding && !(outstanding && answered_get) {
            return Err(Violation::new(
                "abandon-result",
                format!(
                    "set_request_deadline of request {} ({}) returned {returned}; it was {}",
                    request.sequence(),
                    issued.name,
                    if outstanding {
                        "outstanding"
                    } else {
                        "resolved or abandoned"
                    },
                ),
            ));
        }
        if returned {
            issued.deadline = Some(deadline);
            self.deadlines.insert(index_of(request), (deadline, false));
        }
        Ok(())
    }

    /// True when `index` is a `basic.get` whose get-ok the client has read
    /// (`read` bytes of the server's stream): answered, so its deadline no
    /// longer applies though its content is still to come.
    fn get_ok_read(index: usize, read: u64, log: &Log) -> bool {
        log.requests
            .get(index)
            .and_then(|entry| entry.get_ok_end)
            .is_some_and(|end| end <= read)
    }

    /// `handle_timeout(now)` ran with the client having read `read` bytes
    /// of the server's stream: every deadline passed by `now` is due, its
    /// request must fail with `TimedOut` unless answered first.
    pub(crate) fn timeout_driven(&mut self, now: Instant, read: u64, log: &Log) {
        for (index, (deadline, due)) in &mut self.deadlines {
            if *deadline <= now && !Self::get_ok_read(*index, read, log) {
                *due = true;
            }
        }
    }

    /// After the events of a step: no request whose deadline came while
    /// `handle_timeout` ran is still outstanding, and `poll_timeout`
    /// (`poll`) is no later than any deadline still ahead, so the
    /// adapter's timer fires for it.
    pub(crate) fn check_deadlines(
        &mut self,
        poll: Option<Instant>,
        read: u64,
        log: &Log,
    ) -> Checked {
        let issued = &self.issued;
        self.deadlines
            .retain(|index, _| issued.get(*index).is_some_and(Issued::outstanding));
        for (index, (deadline, due)) in &self.deadlines {
            let missed = if *due {
                "is still outstanding after handle_timeout ran past its deadline".to_owned()
            } else if poll.map_or(true, |poll| poll > *deadline)
                && !Self::get_ok_read(*index, read, log)
            {
                format!(
                    "has a deadline {} ms before poll_timeout's",
                    poll.map_or(u128::MAX, |poll| (poll - *deadline).as_millis())
                )
            } else {
                continue;
            };
            return Err(Violation::new(
                "deadline-missed",
                format!("request {} ({}) {missed}", index + 1, self.name(*index)),
            ));
        }
        Ok(())
    }

    /// True if the application was handed the message with this delivery
    /// tag, as a delivery or a get-ok.
    pub(crate) fn handed(&self, channel: u16, incarnation: u32, tag: u64) -> bool {
        let key = (channel, incarnation, tag);
        self.delivered.contains(&key) || self.got.contains(&key)
    }

    /// The incarnation of `channel` the application has now (0: never
    /// opened), and whether it was closed.
    pub(crate) fn life(&self, channel: u16) -> (u32, bool) {
        self.lives
            .get(&channel)
            .map_or((0, true), |life| (life.incarnation, life.closed))
    }

    /// The consumer tag the broker gave the given-up consume `index`.
    fn dead_consumer(&self, index: usize, log: &Log) -> Option<String> {
        if self.issued.get(index)?.name != "basic.consume" {
            return None;
        }
        match log
            .requests
            .get(index)
            .and_then(|entry| entry.reply.as_ref())
        {
            Some((Method::BasicConsumeOk(ok), _)) => {
                Some(ok.consumer_tag.to_string_lossy().into_owned())
            }
            _ => None,
        }
    }

    /// When the network is drained and the broker quiet on an open
    /// connection: a given-up consume's consumer was cancelled by the core
    /// (the broker has it no more), and a given-up `channel.open`'s channel
    /// was closed. `consumer_request` names the consume that made a
    /// consumer the broker has.
    pub(crate) fn quiet(
        &self,
        log: &Log,
        consumer_request: impl Fn(u16, u32, &str) -> Option<usize>,
    ) -> Checked {
        for index in &self.given_up {
            let Some(issued) = self.issued.get(*index) else {
                continue;
            };
            let (incarnation, closed) = self.life(issued.channel);
            if incarnation != issued.incarnation || closed {
                continue;
            }
            if issued.name == "channel.open" {
                return Err(Violation::new(
                    "abandoned-open",
                    format!(
                        "channel {} is still not closed, its channel.open (request {}) given up",
                        issued.channel,
                        index + 1
                    ),
                ));
            }
            if let Some(tag) = self.dead_consumer(*index, log) {
                if consumer_request(issued.channel, incarnation, &tag) == Some(*index) {
                    return Err(Violation::new(
                        "abandoned-consumer",
                        format!(
                            "consumer {tag} on channel {} still consumes at the broker, its basic.consume (request {}) given up",
                            issued.channel,
                            index + 1
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The core requeued the message `tag` on its own (a `basic.reject`
    /// the application did not make): only what nobody waits for may go
    /// back, the get-ok of a given-up `basic.get` or a delivery to a
    /// consumer whose consume or cancel was given up.
    pub(crate) fn given_back(
        &self,
        channel: u16,
        incarnation: u32,
        tag: u64,
        log: &Log,
    ) -> Checked {
        let on_channel = |index: &usize| {
            self.issued.get(*index).is_some_and(|issued| {
                issued.channel == channel && issued.incarnation == incarnation
            })
        };
        let reply = |index: &usize| {
            log.requests
                .get(*index)
                .and_then(|entry| entry.reply.as_ref())
        };
        let delivered = log.deliveries.get(&(channel, incarnation, tag));
        let consumer = delivered.map(|(consumer, _, _)| consumer.as_str());
        let consume_given_up =
            delivered.is_some_and(|(_, _, consume)| self.given_up.contains(consume));
        let unwanted = consume_given_up
            || self
                .given_up
                .iter()
                .filter(|index| on_channel(index))
                .any(|index| match (reply(index), consumer) {
                    (Some((Method::BasicGetOk(ok), _)), None) => ok.delivery_tag == tag,
                    (Some((Method::BasicCancelOk(ok), _)), Some(consumer)) => {
                        ok.consumer_tag == consumer
                    }
                    _ => false,
                });
        if unwanted {
            return Ok(());
        }
        Err(Violation::new(
            "given-back-wanted",
            format!(
                "the core requeued message {tag} on channel {channel} ({}), which nobody gave up",
                consumer.map_or_else(|| "a get-ok".to_owned(), |c| format!("a delivery to {c}"))
            ),
        ))
    }

    /// A publish in confirm mode returned `sequence`.
    pub(crate) fn published(&mut self, channel: u16, sequence: u64) -> Checked {
        let Some(life) = self.lives.get_mut(&channel) else {
            return Err(Violation::new(
                "confirm-once",
                "publish on an unknown channel",
            ));
        };
        if sequence <= life.sequence_offset {
            return Err(Violation::new(
                "numbering-continues",
                format!(
                    "publish sequence {sequence} on channel {channel}, which continues after {}",
                    life.sequence_offset
                ),
            ));
        }
        life.last_sequence = life.last_sequence.max(sequence);
        if !life.unconfirmed.insert(sequence) {
            return Err(Violation::new(
                "confirm-once",
                format!("sequence {sequence} handed out twice on channel {channel}"),
            ));
        }
        Ok(())
    }

    /// Checks one event against the invariants.
    pub(crate) fn event(&mut self, event: &Event, log: &Log, now: Instant) -> Checked {
        if let Some(error) = &self.closed {
            return Err(Violation::new(
                "event-after-closed",
                format!("{event:?} after Closed({error})"),
            ));
        }
        match event {
            Event::Reply {
                channel,
                request,
                method,
            } => {
                let index = self.resolve(*channel, *request, "Reply")?;
                let expected = log
                    .requests
                    .get(index)
                    .and_then(|entry| entry.reply.clone());
                match expected {
                    Some((reply, None)) if reply == *method => Ok(()),
                    other => Err(Violation::new(
                        "reply-mismatch",
                        format!(
                            "request {} ({}) on channel {channel} got {method:?}; the broker answered {other:?}",
                            request.sequence(),
                            self.name(index),
                        ),
                    )),
                }
            }
            Event::GetOk {
                channel,
                request,
                message,
            } => {
                let index = self.resolve(*channel, *request, "GetOk")?;
                let offset = self.lives.get(channel).map_or(0, |life| life.tag_offset);
                if message.delivery_tag <= offset {
                    return Err(Violation::new(
                        "numbering-continues",
                        format!(
                            "get-ok tag {} on channel {channel}, which continues after {offset}",
                            message.delivery_tag
                        ),
                    ));
                }
                let wire = self.wire_tag(*channel, message.delivery_tag);
                self.got
                    .insert((*channel, self.incarnation(*channel), wire));
                if let Some(life) = self.lives.get_mut(channel) {
                    life.last_tag = life.last_tag.max(message.delivery_tag);
                }
                let expected = log
                    .requests
                    .get(index)
                    .and_then(|entry| entry.reply.clone());
                match expected {
                    Some((Method::BasicGetOk(ok), Some(body)))
                        if ok.delivery_tag == wire && body == message.content.body =>
                    {
                        Ok(())
                    }
                    other => Err(Violation::new(
                        "reply-mismatch",
                        format!(
                            "request {} ({}) got a message with tag {}; the broker answered {other:?}",
                            request.sequence(),
                            self.name(index),
                            message.delivery_tag
                        ),
                    )),
                }
            }
            Event::ChannelOpened { channel, request } => {
                let index = self.resolve(*channel, *request, "ChannelOpened")?;
                if self.name(index) != "channel.open" {
                    return Err(Violation::new(
                        "reply-mismatch",
                        format!("ChannelOpened resolved {}", self.name(index)),
                    ));
                }
                match self.lives.get_mut(channel) {
                    Some(life) if !life.opened && !life.closed => {
                        life.opened = true;
                        Ok(())
                    }
                    _ => Err(Violation::new(
                        "channel-lifecycle",
                        format!("ChannelOpened for channel {channel} twice or after close"),
                    )),
                }
            }
            Event::RequestFailed {
                channel,
                request,
                failure,
            } => {
                let index = self.resolve(*channel, *request, "RequestFailed")?;
                if *failure != Failure::TimedOut {
                    return Ok(());
                }
                // The core abandons what times out.
                self.given_up.insert(index);
                match self.issued.get(index).and_then(|issued| issued.deadline) {
                    Some(deadline) if now >= deadline => Ok(()),
                    deadline => Err(Violation::new(
                        "timed-out-early",
                        format!(
                            "request {} ({}) timed out {}",
                            request.sequence(),
                            self.name(index),
                            deadline.map_or_else(
                                || "without a deadline".to_owned(),
                                |deadline| format!(
                                    "{} ms before its deadline",
                                    (deadline - now).as_millis()
                                )
                            )
                        ),
                    )),
                }
            }
            Event::Delivery(delivery) => {
                if let Some(life) = self.lives.get_mut(&delivery.channel) {
                    if delivery.delivery_tag <= life.tag_offset {
                        return Err(Violation::new(
                            "numbering-continues",
                            format!(
                                "delivery tag {} on channel {}, which continues after {}",
                                delivery.delivery_tag, delivery.channel, life.tag_offset
                            ),
                        ));
                    }
                    life.last_tag = life.last_tag.max(delivery.delivery_tag);
                }
                let key = (
                    delivery.channel,
                    self.incarnation(delivery.channel),
                    self.wire_tag(delivery.channel, delivery.delivery_tag),
                );
                if !self.delivered.insert(key) {
                    return Err(Violation::new(
                        "delivery-mismatch",
                        format!("delivery {key:?} reported twice"),
                    ));
                }
                let consume = log.deliveries.get(&key).map(|(_, _, consume)| *consume);
                if let Some(index) = consume.filter(|index| self.given_up.contains(index)) {
                    return Err(Violation::new(
                        "abandoned-consumer",
                        format!(
                            "delivery {} to {} on channel {}, whose basic.consume (request {}) was given up",
                            delivery.delivery_tag,
                            delivery.consumer_tag,
                            delivery.channel,
                            index + 1
                        ),
                    ));
                }
                match log.deliveries.get(&key) {
                    Some((tag, body, _))
                        if delivery.consumer_tag == tag.as_str()
                            && *body == delivery.content.body =>
                    {
                        Ok(())
                    }
                    other => Err(Violation::new(
                        "delivery-mismatch",
                        format!(
                            "delivery {} to {} on channel {}; the broker sent {other:?}",
                            delivery.delivery_tag, delivery.consumer_tag, delivery.channel
                        ),
                    )),
                }
            }
            Event::MessageRefused(refused) => {
                let (consumer_tag, delivery_tag) = match &refused.origin {
                    RefusedOrigin::Delivery {
                        consumer_tag,
                        delivery_tag,
                        ..
                    } => (consumer_tag, delivery_tag),
                    RefusedOrigin::Return { .. } => {
                        // The broker's next return on the channel, refused:
                        // the ones after it keep their places.
                        let key = (refused.channel, self.incarnation(refused.channel));
                        *self.returned.entry(key).or_insert(0) += 1;
                        return Ok(());
                    }
                    _ => return Ok(()),
                };
                let key = (
                    refused.channel,
                    self.incarnation(refused.channel),
                    self.wire_tag(refused.channel, *delivery_tag),
                );
                let consume = log.deliveries.get(&key).map(|(_, _, consume)| *consume);
                match consume.filter(|index| self.given_up.contains(index)) {
                    // The application never learnt of the consumer, or
                    // stopped waiting for it: a delivery to it is no
                    // more its business refused than read.
                    Some(index) => Err(Violation::new(
                        "abandoned-consumer",
                        format!(
                            "MessageRefused for delivery {delivery_tag} to {consumer_tag} on channel {}, whose basic.consume (request {}) was given up",
                            refused.channel,
                            index + 1
                        ),
                    )),
                    None => Ok(()),
                }
            }
            Event::Confirm {
                channel,
                sequence,
                outcome,
            } => {
                let incarnation = self.incarnation(*channel);
                let wire = self.wire_sequence(*channel, *sequence);
                let Some(life) = self.lives.get_mut(channel) else {
                    return Err(Violation::new(
                        "confirm-once",
                        format!("confirm on unknown channel {channel}"),
                    ));
                };
                if !life.unconfirmed.remove(sequence) {
                    return Err(Violation::new(
                        "confirm-once",
                        format!(
                            "confirm of sequence {sequence} on channel {channel}, not outstanding"
                        ),
                    ));
                }
                let sent = log.confirms.get(&(*channel, incarnation, wire));
                match (outcome, sent) {
                    (ConfirmOutcome::Ack, Some(true))
                    | (ConfirmOutcome::Nack, Some(false))
                    | (ConfirmOutcome::Failed(_), _) => Ok(()),
                    (outcome, sent) => Err(Violation::new(
                        "confirm-outcome",
                        format!("sequence {sequence} on channel {channel}: {outcome:?}, broker sent {sent:?}"),
                    )),
                }
            }
            Event::ChannelClosed { channel, .. } => {
                self.lost_during_replay(*channel);
                let Some(life) = self.lives.get_mut(channel) else {
                    return Err(Violation::new(
                        "channel-lifecycle",
                        format!("ChannelClosed for channel {channel}, never opened"),
                    ));
                };
                if life.closed {
                    return Err(Violation::new(
                        "channel-lifecycle",
                        format!("ChannelClosed twice for channel {channel}"),
                    ));
                }
                life.closed = true;
                if !life.unconfirmed.is_empty() {
                    return Err(Violation::new(
                        "unresolved-at-close",
                        format!(
                            "channel {channel} closed with publishes {:?} unconfirmed",
                            life.unconfirmed
                        ),
                    ));
                }
                let incarnation = life.incarnation;
                self.unresolved(|issued| {
                    issued.channel == *channel && issued.incarnation == incarnation
                })
            }
            Event::Recovered {
                renamed_queues,
                failures,
            } => self.recovered(renamed_queues, failures, log),
            Event::Closed(error) => {
                self.closed = Some(error.clone());
                for (channel, life) in &self.lives {
                    if !life.unconfirmed.is_empty() {
                        return Err(Violation::new(
                            "unresolved-at-close",
                            format!("connection closed with publishes {:?} on channel {channel} unconfirmed", life.unconfirmed),
                        ));
                    }
                }
                self.unresolved(|_| true)
            }
            Event::Returned(returned) => {
                let key = (returned.channel, self.incarnation(returned.channel));
                let count = self.returned.entry(key).or_insert(0);
                let sent = log.returns.get(&key).and_then(|all| all.get(*count));
                *count += 1;
                match sent {
                    Some((code, body))
                        if *code == returned.reply_code && *body == returned.content.body =>
                    {
                        Ok(())
                    }
                    other => Err(Violation::new(
                        "return-mismatch",
                        format!(
                            "return {} on channel {} ({}); the broker sent {other:?}",
                            *count, returned.channel, returned.reply_code
                        ),
                    )),
                }
            }
            Event::ConsumerCancelled {
                channel,
                consumer_tag,
            } => {
                let key = (
                    *channel,
                    self.incarnation(*channel),
                    consumer_tag.to_string_lossy().into_owned(),
                );
                if log.cancels.contains(&key) {
                    Ok(())
                } else {
                    Err(Violation::new(
                        "cancel-mismatch",
                        format!("ConsumerCancelled {key:?}, which the broker never cancelled"),
                    ))
                }
            }
            _ => Ok(()),
        }
    }

    fn name(&self, index: usize) -> &'static str {
        self.issued.get(index).map_or("?", |issued| issued.name)
    }

    /// Marks a request resolved; its index.
    fn resolve(
        &mut self,
        channel: u16,
        request: RequestId,
        what: &str,
    ) -> Result<usize, Violation> {
        let index = index_of(request);
        let Some(issued) = self.issued.get_mut(index) else {
            return Err(Violation::new(
                "unknown-request",
                format!(
                    "{what} for request {} that was never made",
                    request.sequence()
                ),
            ));
        };
        if issued.abandoned {
            return Err(Violation::new(
                "event-after-abandon",
                format!(
                    "{what} for request {} ({}), which {}",
                    request.sequence(),
                    issued.name,
                    if issued.name == OWN_CANCEL {
                        "the application never made"
                    } else {
                        "the application abandoned"
                    }
                ),
            ));
        }
        if issued.resolved {
            return Err(Violation::new(
                "request-resolved-once",
                format!(
                    "{what} for request {} ({}), already resolved",
                    request.sequence(),
                    issued.name
                ),
            ));
        }
        if issued.channel != channel {
            return Err(Violation::new(
                "reply-mismatch",
                format!(
                    "{what} on channel {channel} for request {} made on channel {}",
                    request.sequence(),
                    issued.channel
                ),
            ));
        }
        issued.resolved = true;
        Ok(index)
    }

    fn unresolved(&self, filter: impl Fn(&Issued) -> bool) -> Checked {
        match self
            .issued
            .iter()
            .enumerate()
            .find(|(_, issued)| issued.outstanding() && filter(issued))
        {
            Some((index, issued)) => Err(Violation::new(
                "unresolved-at-close",
                format!(
                    "request {} ({} on channel {}) never resolved",
                    index + 1,
                    issued.name,
                    issued.channel
                ),
            )),
            None => Ok(()),
        }
    }

    /// The final check: the connection ended, and everything was resolved.
    pub(crate) fn at_end(&self) -> Checked {
        if self.closed.is_none() {
            return Err(Violation::new(
                "not-closed-promptly",
                "no Closed event at the end",
            ));
        }
        self.unresolved(|_| true)
    }
}

/// Where a request stands in [`Oracle::issued`].
fn index_of(request: RequestId) -> usize {
    usize::try_from(request.sequence())
        .unwrap_or(usize::MAX)
        .wrapping_sub(1)
}
