//! The invariants checked after every step, from what the application was
//! told (events) against what it asked for and what the broker did.
//!
//! Request ids: the core numbers its requests 1, 2, 3, ... in the order
//! they are made, and `Connection::open_channel` returns the channel, not
//! the id its [`Event::ChannelOpened`] will carry. The oracle therefore
//! predicts each id from the count so far, and checks the prediction on
//! every request whose id the core does return. The n-th request frame the
//! broker read is the n-th request made (the client writes one ordered
//! stream), so the broker's log says what the reply to each id must be.

use std::collections::{BTreeMap, BTreeSet};

use amqp_proto::spec::Method;
use amqp_proto::{ConfirmOutcome, ConnectionError, Event, RequestId};

use crate::broker::Log;

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

/// One request the application made.
#[derive(Debug)]
struct Issued {
    channel: u16,
    incarnation: u32,
    name: &'static str,
    resolved: bool,
}

/// One life of a channel id, from `open_channel` to its close.
#[derive(Debug, Default)]
struct Life {
    incarnation: u32,
    opened: bool,
    closed: bool,
    unconfirmed: BTreeSet<u64>,
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
        });
    }

    /// `open_channel` returned `channel`.
    pub(crate) fn opened_channel(&mut self, channel: u16) -> Checked {
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
    ) -> Checked {
        let expected = self.issued.len() as u64 + 1;
        if request.sequence() != expected {
            return Err(Violation::new(
                "request-numbering",
                format!(
                    "{name} got request id {}, expected {expected}",
                    request.sequence()
                ),
            ));
        }
        self.push(channel, name);
        Ok(())
    }

    /// A publish in confirm mode returned `sequence`.
    pub(crate) fn published(&mut self, channel: u16, sequence: u64) -> Checked {
        let Some(life) = self.lives.get_mut(&channel) else {
            return Err(Violation::new(
                "confirm-once",
                "publish on an unknown channel",
            ));
        };
        if !life.unconfirmed.insert(sequence) {
            return Err(Violation::new(
                "confirm-once",
                format!("sequence {sequence} handed out twice on channel {channel}"),
            ));
        }
        Ok(())
    }

    /// Checks one event against the invariants.
    pub(crate) fn event(&mut self, event: &Event, log: &Log) -> Checked {
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
                let expected = log
                    .requests
                    .get(index)
                    .and_then(|entry| entry.reply.clone());
                match expected {
                    Some((Method::BasicGetOk(ok), Some(body)))
                        if ok.delivery_tag == message.delivery_tag && body == message.content.body =>
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
                channel, request, ..
            } => self.resolve(*channel, *request, "RequestFailed").map(drop),
            Event::Delivery(delivery) => {
                let key = (
                    delivery.channel,
                    self.incarnation(delivery.channel),
                    delivery.delivery_tag,
                );
                if !self.delivered.insert(key) {
                    return Err(Violation::new(
                        "delivery-mismatch",
                        format!("delivery {key:?} reported twice"),
                    ));
                }
                match log.deliveries.get(&key) {
                    Some((tag, body))
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
            Event::Confirm {
                channel,
                sequence,
                outcome,
            } => {
                let incarnation = self.incarnation(*channel);
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
                let sent = log.confirms.get(&(*channel, incarnation, *sequence));
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
        let index = usize::try_from(request.sequence())
            .unwrap_or(usize::MAX)
            .wrapping_sub(1);
        let Some(issued) = self.issued.get_mut(index) else {
            return Err(Violation::new(
                "unknown-request",
                format!(
                    "{what} for request {} that was never made",
                    request.sequence()
                ),
            ));
        };
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
            .find(|(_, issued)| !issued.resolved && filter(issued))
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
