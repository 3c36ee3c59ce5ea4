//! The connection's side of automatic recovery: keeping the topology record
//! current from events, replaying a recorded topology after open-ok, and
//! reopening a channel the server closed for a consumer timeout, or that
//! this side closed because the broker nacked it before any ack.

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
        if self.config.reopen_timed_out_channels || !self.closing_to_reopen.is_empty() {
            self.reopen_closed_channels(first_new);
        }
        self.intercept_replay_events(first_new);
        self.record_events(first_new);
        if self.config.reopen_unacked_channels {
            self.close_nacked_channels(first_new);
        }
        if (self.replay.is_some() || !self.channel_replays.is_empty()) && self.is_open() {
            self.advance_replay();
        }
    }

    /// Takes the replays' own events out of those pushed since `first_new`.
    pub(super) fn intercept_replay_events(&mut self, first_new: usize) {
        if self.replay.is_none() && self.channel_replays.is_empty() {
            return;
        }
        let new = self.events.split_off(first_new);
        for (event, weight) in new {
            let mut kept = Some(event);
            for replay in self.replay.iter_mut().chain(&mut self.channel_replays) {
                if let Some(event) = kept.take() {
                    kept = replay.intercept(event);
                }
            }
            if let Some(event) = kept {
                self.events.push_weighed(event, weight);
            }
        }
    }

    /// True while channel `id` is being reopened: after a consumer
    /// timeout, or closing to be reopened after nacks.
    pub(crate) fn is_reopening(&self, id: u16) -> bool {
        self.closing_to_reopen.contains(&id)
            || self
                .channel_replays
                .iter()
                .any(|replay| replay.reopening() == Some(id))
    }

    /// Closes each recorded channel whose publish was nacked, among the
    /// events since `first_new`, before any of its publishes was acked
    /// (see [`Config::reopen_unacked_channels`](crate::Config::reopen_unacked_channels)):
    /// its close-ok reopens it ([`Self::reopen_closed_channels`]).
    fn close_nacked_channels(&mut self, first_new: usize) {
        if self.replay.is_some() || !self.is_open() {
            return;
        }
        let mut nacked: Vec<u16> = Vec::new();
        for event in self.events.since(first_new) {
            if let Event::Confirm {
                channel,
                outcome: crate::event::ConfirmOutcome::Nack,
                ..
            } = event
            {
                if !nacked.contains(channel) {
                    nacked.push(*channel);
                }
            }
        }
        for id in nacked {
            let Some(state) = self.channels.get(usize::from(id)).and_then(Option::as_ref) else {
                continue;
            };
            let recorded = self.recorder.as_ref().is_some_and(|recorder| {
                recorder
                    .topology
                    .channels()
                    .iter()
                    .any(|record| record.id == id)
            });
            if !recorded || !state.has_no_ack_yet() || state.is_closing() || self.is_reopening(id) {
                continue;
            }
            let text = "reopening: publishes nacked before any ack";
            if self
                .send_channel_close(id, ReplyCode::REPLY_SUCCESS, text)
                .is_ok()
            {
                self.closing_to_reopen.push(id);
            }
        }
    }

    /// Turns each [`Event::ChannelClosed`] since `first_new` of a recorded
    /// channel the server closed for a consumer timeout, or this side
    /// closed to reopen it, into an [`Event::ChannelRecovering`], and
    /// starts reopening the channel: the record is left as it is, so the
    /// channel comes back with its mode, qos and consumers. Not while the
    /// connection declares its topology again (that replay handles its
    /// channels' closes), nor for a channel being reopened already (a
    /// second timeout before its consumers are back ends it).
    fn reopen_closed_channels(&mut self, first_new: usize) {
        if self.replay.is_some() || !self.is_open() {
            return;
        }
        let Some(recorder) = self.recorder.as_ref() else {
            return;
        };
        let replays = &mut self.channel_replays;
        let closing_to_reopen = &mut self.closing_to_reopen;
        let timed_out = self.config.reopen_timed_out_channels;
        for event in self.events.since_mut(first_new) {
            let Event::ChannelClosed { channel, reason } = event else {
                continue;
            };
            let (channel, reason) = (*channel, reason.clone());
            let ours = closing_to_reopen.iter().position(|id| *id == channel);
            if let Some(index) = ours {
                closing_to_reopen.swap_remove(index);
            }
            let wanted = ours.is_some() || (timed_out && reason.is_consumer_timeout());
            let reopening = replays
                .iter()
                .any(|replay| replay.reopening() == Some(channel));
            let record = recorder
                .topology
                .channels()
                .iter()
                .find(|record| record.id == channel);
            let Some(record) = record.filter(|_| wanted && !reopening) else {
                continue;
            };
            replays.push(Replay::channel(record, reason.clone()));
            *event = Event::ChannelRecovering { channel, reason };
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

    /// Sends the replays' steps until each awaits a reply, or emits its
    /// [`Event::Recovered`] or [`Event::ChannelRecovered`].
    fn advance_replay(&mut self) {
        if let Some(replay) = self.replay.take() {
            self.replay = self.drive_replay(replay);
        }
        for replay in std::mem::take(&mut self.channel_replays) {
            if let Some(replay) = self.drive_replay(replay) {
                self.channel_replays.push(replay);
            }
        }
    }

    /// Sends `replay`'s steps until one awaits a reply (the replay is
    /// handed back) or it is done (its event is emitted).
    fn drive_replay(&mut self, mut replay: Replay) -> Option<Replay> {
        loop {
            match replay.next() {
                Next::Wait => return Some(replay),
                Next::Done(event) => {
                    if let Event::Recovered { renamed_queues, .. } = &event {
                        if let Some(recorder) = self.recorder.as_mut() {
                            for (old, new) in renamed_queues {
                                recorder.topology.rename_queue(old, new);
                            }
                        }
                        super::stats::add(&mut self.stats.recoveries, 1);
                    }
                    self.events.push_back(event);
                    return None;
                }
                Next::Send(step) => match self.send_replay_step(&step) {
                    Ok(request) => replay.sent(step, request),
                    // Only an over-long value can fail to encode: it is
                    // reported like a refusal, and the replay goes on.
                    Err((channel, method, reason)) => {
                        replay.record_failure(channel, method, Failure::Channel(reason));
                    }
                },
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
                let text = "recovery declarations done";
                self.send_channel_close(*id, ReplyCode::REPLY_SUCCESS, text)
                    .map_err(|error| unsendable(*id, "channel.close", &error))?;
                Ok(None)
            }
        }
    }
}
