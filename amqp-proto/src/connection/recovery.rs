//! The connection's side of automatic recovery: keeping the topology record
//! current from events, and replaying a recorded topology after open-ok.

use crate::channel::{Channel, ChannelHandle};
use crate::error::{CloseReason, Initiator};
use crate::event::{Event, Failure};
use crate::recovery::{Next, Replay, Step};
use crate::spec::constants::ReplyCode;

use super::Connection;

impl Connection {
    /// Passes the events pushed since `first_new` by the replay (which
    /// takes its own replies out) and the recorder, then sends the replay's
    /// next step if it was waiting for one of them.
    pub(super) fn settle_recovery_events(&mut self, first_new: usize) {
        self.intercept_replay_events(first_new);
        self.record_events(first_new);
        if self.replay.is_none() && self.config.reopen_unacked_channels {
            self.reopen_nacked_channel(first_new);
        }
        if self.replay.is_some() && self.is_open() {
            self.advance_replay();
        }
    }

    /// Starts reopening the first channel among the events since
    /// `first_new` whose publish was nacked before any was acked (see
    /// [`Config::reopen_unacked_channels`](crate::Config::reopen_unacked_channels)).
    /// One channel at a time: another such channel is reopened at its next
    /// nack.
    fn reopen_nacked_channel(&mut self, first_new: usize) {
        if !self.is_open() {
            return;
        }
        let nacked = self.events.since(first_new).find_map(|event| match event {
            Event::Confirm {
                channel,
                outcome: crate::event::ConfirmOutcome::Nack,
                ..
            } => Some(*channel),
            _ => None,
        });
        let Some(id) = nacked else {
            return;
        };
        let Some(state) = self.channels.get(usize::from(id)).and_then(Option::as_ref) else {
            return;
        };
        if !state.has_no_ack_yet() || state.is_closing() {
            return;
        }
        let (highest_delivery_tag, last_sequence) =
            (state.highest_delivery_tag(), state.last_sequence());
        let Some(recorder) = self.recorder.as_mut() else {
            return;
        };
        let Some(record) = recorder.topology.channel_mut(id) else {
            return;
        };
        // The reopened channel goes on counting where this one stopped, as
        // after a connection recovery.
        record.delivery_tag_offset = highest_delivery_tag;
        record.publish_sequence_offset = last_sequence;
        self.replay = Replay::reopen(&recorder.topology, id);
    }

    /// Takes the replay's own events out of those pushed since `first_new`.
    pub(super) fn intercept_replay_events(&mut self, first_new: usize) {
        if let Some(mut replay) = self.replay.take() {
            let new = self.events.split_off(first_new);
            for event in new {
                if let Some(event) = replay.intercept(event) {
                    self.events.push_back(event);
                }
            }
            self.replay = Some(replay);
        }
    }

    /// Keeps the topology record current with the events since `first_new`.
    pub(super) fn record_events(&mut self, first_new: usize) {
        if let Some(recorder) = self.recorder.as_mut() {
            for event in self.events.since(first_new) {
                recorder.observe(event);
                // The event names the id; the record keeps the opening, so
                // a recovered channel comes back under the same handle.
                if let Event::ChannelOpened { channel, .. } = event {
                    if let (Some(Some(state)), Some(record)) = (
                        self.channels.get(usize::from(*channel)),
                        recorder.topology.channel_mut(*channel),
                    ) {
                        record.epoch = state.handle().epoch();
                    }
                }
            }
        }
    }

    /// Open-ok arrived on a connection made by `recover`: start declaring.
    pub(super) fn start_replay(&mut self) {
        if !self.replay_on_open {
            return;
        }
        self.replay_on_open = false;
        let channel_max = match self.tuning.channel_max {
            0 => u16::MAX,
            max => max,
        };
        let Some(recorder) = self.recorder.as_mut() else {
            return;
        };
        // The new server may allow fewer channels than the old one did: a
        // channel whose id it does not allow cannot come back. It closes,
        // and the recovery reports it refused.
        let beyond: Vec<u16> = recorder
            .topology
            .channels()
            .iter()
            .map(|channel| channel.id)
            .filter(|id| *id > channel_max)
            .collect();
        let mut refused = Vec::new();
        for id in beyond {
            recorder.topology.channel_closed(id);
            let reason = CloseReason::new(
                ReplyCode::CHANNEL_ERROR,
                format!("channel {id} is beyond the new server's channel-max of {channel_max}"),
                Initiator::Client,
            );
            refused.push((id, reason));
        }
        let mut replay = Replay::new(&recorder.topology, channel_max);
        for (channel, reason) in refused {
            replay.record_failure(channel, "channel.open", Failure::Channel(reason.clone()));
            self.events
                .push_back(Event::ChannelClosed { channel, reason });
        }
        self.replay = Some(replay);
        self.advance_replay();
    }

    /// Sends steps until one awaits a reply, or emits [`Event::Recovered`].
    fn advance_replay(&mut self) {
        while let Some(mut replay) = self.replay.take() {
            match replay.next() {
                Next::Wait => {
                    self.replay = Some(replay);
                    return;
                }
                Next::Done(event) => {
                    if let (Event::Recovered { renamed_queues, .. }, Some(recorder)) =
                        (&event, self.recorder.as_mut())
                    {
                        for (old, new) in renamed_queues {
                            recorder.topology.rename_queue(old, new);
                        }
                    }
                    if replay.reopening().is_none() {
                        super::stats::add(&mut self.stats.recoveries, 1);
                    }
                    self.events.push_back(event);
                    return;
                }
                Next::Send(step) => {
                    match self.send_replay_step(&step) {
                        Ok(request) => replay.sent(step, request),
                        // Only an over-long value can fail to encode: it is
                        // reported like a refusal, and the replay goes on.
                        Err((channel, method, reason)) => {
                            replay.record_failure(channel, method, Failure::Channel(reason));
                        }
                    }
                    self.replay = Some(replay);
                }
            }
        }
    }

    /// Queues one step's frame; the request id its reply will carry.
    fn send_replay_step(
        &mut self,
        step: &Step,
    ) -> Result<Option<crate::event::RequestId>, (u16, &'static str, CloseReason)> {
        let unsendable = |channel: u16, method: &'static str, error: &dyn std::fmt::Display| {
            let text = format!("cannot be sent again: {error}");
            (
                channel,
                method,
                CloseReason::new(ReplyCode::FRAME_ERROR, text, Initiator::Client),
            )
        };
        match step {
            Step::Open(id) => {
                let (epoch, delivery_offset, sequence_offset) = self
                    .recorder
                    .as_mut()
                    .and_then(|recorder| recorder.topology.channel_mut(*id))
                    .map_or((0, 0, 0), |record| {
                        (
                            record.epoch,
                            record.delivery_tag_offset,
                            record.publish_sequence_offset,
                        )
                    });
                let max_body_size = self.config.max_body_size;
                let mut opened = None;
                self.send_channel_open(*id, |request| {
                    opened = Some(request);
                    Channel::recovered(
                        ChannelHandle::new(*id, epoch),
                        request,
                        max_body_size,
                        delivery_offset,
                        sequence_offset,
                    )
                })
                .map_err(|error| unsendable(*id, "channel.open", &error))?;
                Ok(opened)
            }
            Step::Request {
                channel, method, ..
            } => self
                .send_request(*channel, method)
                .map_err(|error| unsendable(*channel, method.name(), &error)),
            Step::Close(id) => {
                let reopening = self.replay.as_ref().and_then(Replay::reopening);
                let text = if reopening == Some(*id) {
                    "reopening: publishes nacked before any ack"
                } else {
                    "recovery declarations done"
                };
                self.send_channel_close(*id, ReplyCode::REPLY_SUCCESS, text)
                    .map_err(|error| unsendable(*id, "channel.close", &error))?;
                Ok(None)
            }
        }
    }
}
