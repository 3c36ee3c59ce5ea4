//! The invariants of a connection made by `Connection::recover`: the
//! numbering continues the failed connection's, nothing the application
//! sends is accepted before `Event::Recovered`, the replay declares every
//! recorded thing exactly once (judged from what the broker read), and
//! `Event::Recovered` comes once, after it, with the new names of the
//! server-named queues.

use std::collections::BTreeMap;

use amqp_proto::codec::ShortString;
use amqp_proto::recovery::{Binding, RecoveryFailure, Topology};
use amqp_proto::spec::{self, Method};

use super::{Checked, Life, Oracle, Violation};
use crate::broker::{ChannelView, Log};

/// What a recovered connection owes, from the failed one's record.
#[derive(Debug)]
pub(crate) struct Recovery {
    /// The record the connection was made from.
    topology: Topology,
    /// `Event::Recovered` was seen.
    recovered: bool,
    /// Requests in the broker's log at `Event::Recovered`: all the
    /// replay's (the application's commands fail until then).
    pub(super) replay_end: Option<usize>,
    /// Recorded channels the server closed during the replay: their
    /// remaining steps are skipped.
    lost: Vec<u16>,
}

impl Oracle {
    /// The oracle of a connection made by `Connection::recover` from
    /// `topology`, after the connection `old` judged failed. The recorded
    /// channels are open from the start for the application (it keeps
    /// their handles) and are each the broker's first incarnation; their
    /// numbering must continue after everything the old connection gave
    /// the application.
    pub(crate) fn recovering(topology: Topology, old: &Self) -> Result<Self, Violation> {
        let mut oracle = Self::default();
        for record in topology.channels() {
            let (last_tag, last_sequence) = old
                .lives
                .get(&record.id)
                .map_or((0, 0), |life| (life.last_tag, life.last_sequence));
            if record.delivery_tag_offset < last_tag
                || record.publish_sequence_offset < last_sequence
            {
                return Err(Violation::new(
                    "numbering-continues",
                    format!(
                        "channel {} recovered numbering publishes after {} and deliveries after {}; the application was given up to {last_sequence} and {last_tag}",
                        record.id, record.publish_sequence_offset, record.delivery_tag_offset
                    ),
                ));
            }
            oracle.incarnations.insert(record.id, 1);
            oracle.lives.insert(
                record.id,
                Life {
                    incarnation: 1,
                    opened: true,
                    tag_offset: record.delivery_tag_offset,
                    sequence_offset: record.publish_sequence_offset,
                    last_tag,
                    last_sequence,
                    ..Life::default()
                },
            );
        }
        oracle.recovery = Some(Recovery {
            topology,
            recovered: false,
            replay_end: None,
            lost: Vec::new(),
        });
        Ok(oracle)
    }

    /// True from `Connection::recover` until `Event::Recovered`: commands
    /// must fail with `UsageError::Recovering`.
    pub(crate) fn is_recovering(&self) -> bool {
        self.closed.is_none()
            && self
                .recovery
                .as_ref()
                .is_some_and(|recovery| !recovery.recovered)
    }

    /// Before `Event::Recovered`, only the replay opens channels: a
    /// recorded channel is whatever incarnation the broker has now (the
    /// second when the declarations went first on its id).
    pub(crate) fn follow_replay(&mut self, incarnation: impl Fn(u16) -> u32) {
        if !self.is_recovering() {
            return;
        }
        for (id, life) in &mut self.lives {
            let now = incarnation(*id).max(1);
            life.incarnation = now;
            self.incarnations.insert(*id, now);
        }
    }

    /// A recorded channel closed before `Event::Recovered`.
    pub(super) fn lost_during_replay(&mut self, channel: u16) {
        if let Some(recovery) = self.recovery.as_mut().filter(|r| !r.recovered) {
            recovery.lost.push(channel);
        }
    }

    /// `Event::Recovered`: once, on a recovering connection, after every
    /// step of the replay was answered; what the broker read is exactly
    /// the record (each thing once; what a refused step or a lost channel
    /// skipped aside), and the renamed queues are those the broker named.
    pub(super) fn recovered(
        &mut self,
        renamed: &[(ShortString, ShortString)],
        failures: &[RecoveryFailure],
        log: &Log,
    ) -> Checked {
        let Some(recovery) = self.recovery.as_mut() else {
            return Err(Violation::new(
                "recovered-once",
                "Recovered on a connection not made by recover",
            ));
        };
        if recovery.recovered {
            return Err(Violation::new("recovered-once", "Recovered twice"));
        }
        recovery.recovered = true;
        recovery.replay_end = Some(log.requests.len());
        // A refusal or a lost channel leaves requests of the replay
        // unanswered (the broker closed their channel) and skips steps.
        let complete = failures.is_empty() && recovery.lost.is_empty();
        if let Some((index, entry)) = log
            .requests
            .iter()
            .enumerate()
            .find(|(_, entry)| entry.reply.is_none())
            .filter(|_| complete)
        {
            return Err(Violation::new(
                "recovered-early",
                format!(
                    "Recovered with the replay's request {} ({} on channel {}) unanswered",
                    index + 1,
                    entry.name,
                    entry.channel
                ),
            ));
        }
        check_names(&recovery.topology, renamed, log)?;
        check_replay(&recovery.topology, renamed, log, complete)?;
        // The broker counts every opening, the declarations channel's too:
        // an application opening that id later is a later incarnation.
        for (channel, method) in &log.received {
            if matches!(method, Method::ChannelOpen(_)) && !self.lives.contains_key(channel) {
                *self.incarnations.entry(*channel).or_insert(0) += 1;
            }
        }
        Ok(())
    }

    /// After `Event::Recovered`, with the network drained: the broker has
    /// the recorded channels (those not lost) open, each with its confirm
    /// mode, prefetch and consumers (same tags, the queues renamed).
    pub(crate) fn check_recovered_state(
        &self,
        views: &BTreeMap<u16, ChannelView>,
        renamed: &[(ShortString, ShortString)],
        failures: &[RecoveryFailure],
        log: &Log,
    ) -> Checked {
        let Some(recovery) = &self.recovery else {
            return Ok(());
        };
        for record in recovery.topology.channels() {
            let closed = self.lives.get(&record.id).map_or(true, |life| life.closed);
            if closed
                || recovery.lost.contains(&record.id)
                || failures.iter().any(|f| f.channel == record.id)
            {
                continue;
            }
            let prefetch = record
                .qos
                .iter()
                .rev()
                .find(|qos| !qos.global)
                .map_or(0, |qos| qos.prefetch_count);
            // A consumer the broker cancelled since (consumer-cancel-notify
            // still on its way) is not the recovery's to keep.
            let cancelled = |tag: &str| {
                log.cancels
                    .iter()
                    .any(|(id, _, known)| *id == record.id && known == tag)
            };
            let consumers = record
                .consumers
                .iter()
                .filter(|consume| !cancelled(&text(&consume.consumer_tag)))
                .map(|consume| {
                    (
                        text(&consume.consumer_tag),
                        text(&rename(renamed, &consume.queue)),
                        consume.no_ack,
                    )
                })
                .collect();
            let wanted = ChannelView {
                closing: false,
                confirm: record.confirms,
                prefetch,
                consumers,
            };
            match views.get(&record.id) {
                // The broker closes it: the replay may have been cut short.
                Some(view) if view.closing => {}
                Some(view) if *view == wanted => {}
                other => {
                    return Err(Violation::new(
                        "recovered-state",
                        format!(
                            "after Recovered the broker has channel {} as {other:?}; the record says {wanted:?}",
                            record.id
                        ),
                    ))
                }
            }
        }
        Ok(())
    }
}

fn text(name: &ShortString) -> String {
    name.to_string_lossy().into_owned()
}

/// A server-named queue's new name, or the name as it is.
fn rename(renamed: &[(ShortString, ShortString)], queue: &ShortString) -> ShortString {
    renamed
        .iter()
        .find(|(old, _)| old == queue)
        .map_or_else(|| queue.clone(), |(_, new)| new.clone())
}

/// The renamed queues are the recorded server-named ones, in the record's
/// order, each with the name the broker gave its declaration again.
fn check_names(topology: &Topology, renamed: &[(ShortString, ShortString)], log: &Log) -> Checked {
    let declared: Vec<&Method> = log
        .received
        .iter()
        .map(|(_, method)| method)
        .filter(|method| matches!(method, Method::QueueDeclare(_)))
        .collect();
    let replies = log
        .requests
        .iter()
        .filter(|entry| entry.name == "queue.declare")
        .map(|entry| entry.reply.as_ref().map(|(reply, _)| reply));
    let given: Vec<(ShortString, ShortString)> = declared
        .iter()
        .zip(replies)
        .filter_map(|(sent, reply)| match (sent, reply) {
            (Method::QueueDeclare(sent), Some(Method::QueueDeclareOk(ok)))
                if sent.queue.is_empty() =>
            {
                Some(ok.queue.clone())
            }
            _ => None,
        })
        .zip(
            topology
                .queues()
                .iter()
                .filter(|queue| queue.is_server_named()),
        )
        .map(|(new, old)| (old.name.clone(), new))
        .collect();
    if given != renamed {
        return Err(Violation::new(
            "recovered-names",
            format!("Recovered renamed {renamed:?}; the broker named {given:?}"),
        ));
    }
    Ok(())
}

/// What the broker read before `Event::Recovered` against the record: the
/// recorded channels opened again with their confirm mode and qos, the
/// exchanges, queues and bindings declared on a channel of the replay's
/// own, the consumers with their tags; each exactly once (at most once
/// when a step was refused or a channel lost, which skips steps), and
/// nothing else.
fn check_replay(
    topology: &Topology,
    renamed: &[(ShortString, ShortString)],
    log: &Log,
    complete: bool,
) -> Checked {
    // (channel, method) owed on an application channel; declarations are
    // owed on whichever channel the replay chose (0 here).
    let mut owed: Vec<(u16, Method)> = Vec::new();
    for record in topology.channels() {
        owed.push((record.id, spec::ChannelOpen::default().into()));
        if record.confirms {
            owed.push((record.id, spec::ConfirmSelect { nowait: false }.into()));
        }
        for qos in &record.qos {
            owed.push((record.id, qos.clone().into()));
        }
        for consume in &record.consumers {
            let mut consume = consume.clone();
            consume.queue = rename(renamed, &consume.queue);
            owed.push((record.id, consume.into()));
        }
    }
    for exchange in topology.exchanges() {
        owed.push((0, exchange.clone().into()));
    }
    for queue in topology.queues() {
        owed.push((0, queue.declare.clone().into()));
    }
    for binding in topology.bindings() {
        match binding {
            Binding::Queue(bind) => {
                let mut bind = bind.clone();
                bind.queue = rename(renamed, &bind.queue);
                owed.push((0, bind.into()));
            }
            Binding::Exchange(bind) => owed.push((0, bind.clone().into())),
        }
    }
    for (channel, method) in &log.received {
        // The core's answers to the broker's own methods, and its
        // rejection of a content it refuses, are no replay's steps.
        if matches!(
            method,
            Method::ChannelCloseOk(_)
                | Method::ChannelFlowOk(_)
                | Method::BasicCancelOk(_)
                | Method::BasicReject(spec::BasicReject { requeue: false, .. })
        ) {
            continue;
        }
        // Declarations may go on any channel (the replay's own, which is
        // an application's id when those take every id); a channel's
        // opening is the application's first, and any other opening and
        // every close are the declarations channel's.
        let declaration = matches!(
            method,
            Method::ExchangeDeclare(_)
                | Method::QueueDeclare(_)
                | Method::QueueBind(_)
                | Method::ExchangeBind(_)
        );
        let on = if declaration { 0 } else { *channel };
        let found = owed
            .iter()
            .position(|(id, owed)| *id == on && owed == method);
        match (found, method) {
            (Some(index), _) => {
                owed.remove(index);
            }
            (None, Method::ChannelOpen(_) | Method::ChannelClose(_)) => {}
            (None, _) => {
                return Err(Violation::new(
                    "replay-exact",
                    format!(
                        "before Recovered the broker read {method:?} on channel {channel}, which the record does not owe (or owes once)"
                    ),
                ))
            }
        }
    }
    if let Some((channel, method)) = owed.first().filter(|_| complete) {
        return Err(Violation::new(
            "replay-exact",
            format!(
                "Recovered with no failure, and the replay never sent {method:?} (channel {channel}; 0 is the declarations channel)"
            ),
        ));
    }
    Ok(())
}
