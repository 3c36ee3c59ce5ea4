//! The application's commands, as the steps name them, against the
//! core's public API; refusals (`UsageError`) go into the trace.

use amqp_proto::codec::{BasicProperties, FieldTable, FieldValue};
use amqp_proto::spec::{self, constants::ReplyCode, Method};
use bytes::Bytes;
use std::time::Duration;

use super::Sim;
use crate::app;
use crate::driver;
use crate::oracle::Violation;
use crate::step::Step;

impl Sim {
    /// An application command. Refusals (`UsageError`) are part of the
    /// trace, not failures: the generator does not know the state.
    pub(super) fn command(&mut self, step: &Step) -> Result<(), Violation> {
        let recovering = self.oracle.is_recovering() && self.close_called.is_none();
        let outcome: Result<String, String> = match *step {
            Step::Open => match self
                .connection
                .open_channel()
                .map(amqp_proto::ChannelHandle::id)
            {
                Ok(id) => {
                    let open = self
                        .connection
                        .channel(id)
                        .ok()
                        .and_then(|mut channel| channel.open_request());
                    self.app.channels.push(id);
                    self.oracle.opened_channel(id, open, &self.broker.log)?;
                    if let Some(open) = open {
                        self.app.waits_on(open, id);
                    }
                    Ok(format!("channel {id}"))
                }
                Err(error) => Err(error.to_string()),
            },
            Step::Close { ch } => match self.app.channel(ch) {
                Some(id) => match self.connection.channel(id) {
                    Ok(channel) => channel
                        .close(ReplyCode::REPLY_SUCCESS, "done")
                        .map(|()| format!("closing {id}"))
                        .map_err(|e| e.to_string()),
                    Err(error) => Err(error.to_string()),
                },
                None => Err("no channel".into()),
            },
            Step::DeclareQueue { ch, queue, passive } => {
                let name = if queue % 5 == 4 {
                    String::new()
                } else {
                    format!("q{}", queue % 5)
                };
                self.request(
                    ch,
                    spec::QueueDeclare {
                        queue: name.as_str().into(),
                        passive,
                        ..Default::default()
                    },
                    None,
                )
            }
            Step::DeleteQueue { ch, queue } => {
                let queue = self.app.queue(queue);
                self.request(
                    ch,
                    spec::QueueDelete {
                        queue: queue.as_str().into(),
                        ..Default::default()
                    },
                    None,
                )
            }
            Step::PurgeQueue { ch, queue } => {
                let queue = self.app.queue(queue);
                self.request(
                    ch,
                    spec::QueuePurge {
                        queue: queue.as_str().into(),
                        ..Default::default()
                    },
                    None,
                )
            }
            Step::BindQueue {
                ch,
                queue,
                exchange,
                key,
            }
            | Step::UnbindQueue {
                ch,
                queue,
                exchange,
                key,
            } => {
                let queue = self.app.queue(queue);
                // Never the default exchange: binding to it is refused (403).
                let exchange = app::bindable_exchange(exchange);
                let key = app::key(key);
                if matches!(step, Step::BindQueue { .. }) {
                    self.request(
                        ch,
                        spec::QueueBind {
                            queue: queue.as_str().into(),
                            exchange: exchange.into(),
                            routing_key: key.into(),
                            ..Default::default()
                        },
                        None,
                    )
                } else {
                    self.request(
                        ch,
                        spec::QueueUnbind {
                            queue: queue.as_str().into(),
                            exchange: exchange.into(),
                            routing_key: key.into(),
                            ..Default::default()
                        },
                        None,
                    )
                }
            }
            Step::DeclareExchange { ch, exchange, kind } => self.request(
                ch,
                spec::ExchangeDeclare {
                    exchange: app::own_exchange(exchange).into(),
                    exchange_type: app::kind(kind).into(),
                    ..Default::default()
                },
                None,
            ),
            Step::DeleteExchange { ch, exchange } => self.request(
                ch,
                spec::ExchangeDelete {
                    exchange: app::own_exchange(exchange).into(),
                    ..Default::default()
                },
                None,
            ),
            Step::Qos { ch, prefetch } => self.request(
                ch,
                spec::BasicQos {
                    prefetch_count: u16::from(prefetch),
                    ..Default::default()
                },
                None,
            ),
            Step::Consume {
                ch,
                queue,
                tag,
                no_ack,
            } => {
                let queue = self.app.queue(queue);
                let tag = if tag == 0 {
                    String::new()
                } else {
                    format!("c{tag}")
                };
                self.request(
                    ch,
                    spec::BasicConsume {
                        queue: queue.as_str().into(),
                        consumer_tag: tag.as_str().into(),
                        no_ack,
                        ..Default::default()
                    },
                    Some(no_ack),
                )
            }
            Step::Cancel { consumer } => {
                match app::pick_from(&self.app.consumers, consumer).cloned() {
                    Some((id, tag, _)) => {
                        let pick = self.app.channels.iter().position(|c| *c == id).unwrap_or(0);
                        let pick = u8::try_from(pick).unwrap_or(0);
                        self.request(
                            pick,
                            spec::BasicCancel {
                                consumer_tag: tag.as_str().into(),
                                nowait: false,
                            },
                            None,
                        )
                    }
                    None => Err("no consumer".into()),
                }
            }
            Step::SelectConfirms { ch } => {
                self.request(ch, spec::ConfirmSelect { nowait: false }, None)
            }
            Step::Get { ch, queue, no_ack } => {
                let queue = self.app.queue(queue);
                self.request(
                    ch,
                    spec::BasicGet {
                        queue: queue.as_str().into(),
                        no_ack,
                        ..Default::default()
                    },
                    Some(no_ack),
                )
            }
            Step::Publish {
                ch,
                exchange,
                key,
                mandatory,
                size,
                depth,
            } => self.publish(ch, exchange, key, mandatory, size, depth)?,
            Step::Ack { delivery, multiple } => {
                self.settle_delivery(delivery, multiple, |c, tag| c.ack(tag, multiple))
            }
            Step::Nack {
                delivery,
                multiple,
                requeue,
            } => self.settle_delivery(delivery, multiple, |c, tag| c.nack(tag, multiple, requeue)),
            Step::Reject { delivery, requeue } => {
                let rejected = app::pick_from(&self.app.deliveries, delivery).copied();
                let outcome =
                    self.settle_delivery(delivery, false, |c, tag| c.reject(tag, requeue));
                if let (Ok(_), Some((id, tag))) = (&outcome, rejected) {
                    let incarnation = self.oracle.life(id).0;
                    let wire = self.oracle.wire_tag(id, tag);
                    self.app_rejects.insert((id, incarnation, wire));
                }
                outcome
            }
            Step::UpdateSecret => match self.connection.update_secret("new-token", "expiring") {
                Ok(request) => {
                    self.oracle.requested(
                        0,
                        "connection.update-secret",
                        request,
                        &self.broker.log,
                    )?;
                    self.app.waits_on(request, 0);
                    Ok(format!("request {}", request.sequence()))
                }
                Err(error) => Err(error.to_string()),
            },
            Step::CloseConnection => {
                match driver::close(&mut self.connection, 200, "bye", self.now) {
                    Ok(()) => {
                        self.close_called = Some(self.now);
                        Ok("closing".into())
                    }
                    Err(error) => Err(error.to_string()),
                }
            }
            Step::Abandon { request } => match self.app.outstanding(request) {
                Some(request) => {
                    let returned = self.connection.abandon_request(request);
                    self.oracle.abandoned(request, returned)?;
                    self.app.gives_up(request);
                    Ok(format!(
                        "abandoned request {}: {returned}",
                        request.sequence()
                    ))
                }
                None => Err("no request outstanding".into()),
            },
            Step::Deadline { request, ms } => match self.app.outstanding(request) {
                Some(request) => {
                    let deadline = self.now + Duration::from_millis(u64::from(ms));
                    let returned = self.connection.set_request_deadline(request, deadline);
                    self.oracle.deadline_set(request, deadline, returned)?;
                    Ok(format!(
                        "deadline in {ms} ms on request {}: {returned}",
                        request.sequence()
                    ))
                }
                None => Err("no request outstanding".into()),
            },
            _ => Ok(String::new()),
        };
        let misused = recovering
            .then(|| refused_while_recovering(step, &outcome))
            .flatten();
        self.note(|| match outcome {
            Ok(text) => format!("  ok {text}"),
            Err(text) => format!("  refused: {text}"),
        });
        if let Some(violation) = misused {
            return Err(violation);
        }
        self.broken.take().map_or(Ok(()), Err)
    }

    /// Sends a request on the channel at index `pick`.
    pub(super) fn request(
        &mut self,
        pick: u8,
        method: impl Into<Method>,
        no_ack: Option<bool>,
    ) -> Result<String, String> {
        let method = method.into();
        let name = method.name();
        let id = self.app.channel(pick).ok_or("no channel")?;
        let mut channel = self.connection.channel(id).map_err(|e| e.to_string())?;
        match channel.request(method) {
            Ok(Some(request)) => {
                if let Err(violation) = self.oracle.requested(id, name, request, &self.broker.log) {
                    // Reported by `command` once the outcome is noted.
                    let text = format!("VIOLATION {violation:?}");
                    self.broken = Some(violation);
                    return Err(text);
                }
                self.app.waits_on(request, id);
                if let Some(no_ack) = no_ack {
                    self.app.pending_no_ack.insert(request.sequence(), no_ack);
                }
                Ok(format!("{name} request {}", request.sequence()))
            }
            Ok(None) => Ok(format!("{name} (no reply)")),
            Err(error) => Err(error.to_string()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn publish(
        &mut self,
        pick: u8,
        exchange: u8,
        key: u8,
        mandatory: bool,
        size: u32,
        depth: u8,
    ) -> Result<Result<String, String>, Violation> {
        let Some(id) = self.app.channel(pick) else {
            return Ok(Err("no channel".into()));
        };
        let exchange = app::exchange(exchange);
        let key = app::key(key);
        let publish = spec::BasicPublish {
            exchange: exchange.into(),
            routing_key: key.into(),
            mandatory,
            ..Default::default()
        };
        let mut properties = BasicProperties::default().content_type("application/octet-stream");
        if depth > 0 {
            properties = properties.headers(nested(depth));
        }
        let body: Bytes = (0..size)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into();
        let result = match self.connection.channel(id) {
            Ok(mut channel) => channel.publish(&publish, &properties, body),
            Err(error) => return Ok(Err(error.to_string())),
        };
        match result {
            Ok(Some(sequence)) => {
                self.oracle.published(id, sequence)?;
                Ok(Ok(format!("published, sequence {sequence}")))
            }
            Ok(None) => Ok(Ok("published".into())),
            Err(error) => Ok(Err(error.to_string())),
        }
    }

    pub(super) fn settle_delivery(
        &mut self,
        pick: u8,
        multiple: bool,
        send: impl FnOnce(&mut amqp_proto::ChannelRef<'_>, u64) -> Result<(), amqp_proto::UsageError>,
    ) -> Result<String, String> {
        let (id, tag) = *app::pick_from(&self.app.deliveries, pick).ok_or("no delivery")?;
        let before = self.connection.queued_output();
        let mut channel = self.connection.channel(id).map_err(|e| e.to_string())?;
        send(&mut channel, tag).map_err(|e| e.to_string())?;
        self.app.settled(id, tag, multiple);
        // A delivery from before a recovery (or a reopening) was requeued
        // by the broker: settling it must send nothing, or it would settle
        // whichever message has that tag on the new channel.
        let sent = self.connection.queued_output() > before;
        if sent && self.oracle.is_stale(id, tag) {
            let violation = Violation::new(
                "stale-settlement-sent",
                format!(
                    "settling delivery {tag} on channel {id}, from before the channel's recovery, was sent"
                ),
            );
            let text = format!("VIOLATION {violation:?}");
            self.broken = Some(violation);
            return Err(text);
        }
        Ok(format!("settled {tag} on {id}"))
    }
}

/// Until `Event::Recovered`, a recovered connection refuses every command
/// with `UsageError::Recovering` (the application may still close it; the
/// simulation's own refusals, for want of a channel or a delivery to
/// name, never reach the core).
fn refused_while_recovering(step: &Step, outcome: &Result<String, String>) -> Option<Violation> {
    const APP_SIDE: [&str; 4] = [
        "no channel",
        "no consumer",
        "no delivery",
        "no request outstanding",
    ];
    if matches!(step, Step::CloseConnection) {
        return None;
    }
    let recovering = amqp_proto::UsageError::Recovering.to_string();
    // A connection closing (the broker's close, a failure) refuses as any.
    let closing = amqp_proto::UsageError::ConnectionClosed.to_string();
    match outcome {
        Err(text)
            if *text == recovering || *text == closing || APP_SIDE.contains(&text.as_str()) =>
        {
            None
        }
        Ok(text) => Some(Violation::new(
            "used-while-recovering",
            format!("{step:?} was accepted before Recovered: {text}"),
        )),
        Err(text) => Some(Violation::new(
            "used-while-recovering",
            format!("{step:?} before Recovered was refused with \"{text}\", not Recovering"),
        )),
    }
}

/// A `headers` table nested `depth` levels deep.
fn nested(depth: u8) -> FieldTable {
    let mut table = FieldTable::new();
    table.insert("leaf", 1i32);
    for _ in 1..depth {
        let mut outer = FieldTable::new();
        outer.insert("inner", FieldValue::Table(table));
        table = outer;
    }
    table
}
