//! Connection negotiation (spec 2.2.4 and the connection class):
//! start/start-ok, secure/secure-ok, tune/tune-ok, open/open-ok.

use crate::codec::{Frame, LongString, ShortString};
use crate::error::{CloseReason, ConnectionError, Initiator, ProtocolViolation};
use crate::event::Event;
use crate::spec::constants::ReplyCode;
use crate::spec::{
    ConnectionCloseOk, ConnectionOpen, ConnectionStart, ConnectionStartOk, ConnectionTuneOk, Method,
};

use super::{Connection, State, Tuning};

/// The first item of a space-separated list that `wanted` names, or `None`.
fn offered(list: &LongString, wanted: &str) -> bool {
    list.as_bytes()
        .split(|byte| *byte == b' ')
        .any(|item| item == wanted.as_bytes())
}

impl Connection {
    pub(super) fn handle_handshake(&mut self, frame: Frame) -> Result<(), ProtocolViolation> {
        let Frame::Method { channel: 0, method } = frame else {
            return Err(match frame {
                Frame::Method { channel, method } => ProtocolViolation::WrongChannel {
                    channel,
                    method: method.name(),
                },
                Frame::Heartbeat => return Ok(()),
                other => ProtocolViolation::UnexpectedContent {
                    channel: other.channel(),
                },
            });
        };
        match (self.state.clone(), method) {
            (State::AwaitStart, Method::ConnectionStart(start)) => self.handle_start(start),
            (State::AwaitTune, Method::ConnectionSecure(secure)) => {
                if !matches!(self.config.mechanism, super::SaslMechanism::Custom { .. }) {
                    return Err(ProtocolViolation::UnexpectedMethod {
                        channel: 0,
                        method: "connection.secure",
                        why: "the chosen SASL mechanism has no challenges",
                    });
                }
                self.challenge_pending = true;
                self.events.push_back(Event::SaslChallenge {
                    challenge: secure.challenge,
                });
                Ok(())
            }
            (State::AwaitTune, Method::ConnectionTune(tune)) => {
                let server = Tuning {
                    channel_max: tune.channel_max,
                    frame_max: tune.frame_max,
                    heartbeat: tune.heartbeat,
                };
                self.tuning = Tuning::negotiate(&self.config, server);
                let tune_ok = ConnectionTuneOk {
                    channel_max: self.tuning.channel_max,
                    frame_max: self.tuning.frame_max,
                    heartbeat: self.tuning.heartbeat,
                };
                self.sink().send(0, &tune_ok.into());
                self.decoder.set_max_frame_size(self.tuning.frame_max);
                let open = ConnectionOpen {
                    virtual_host: ShortString::from(self.config.virtual_host.as_str()),
                    ..ConnectionOpen::default()
                };
                if let Err(error) = self.send(0, &open.into()) {
                    // A virtual host name over 255 bytes: local misuse found
                    // only now; close as a client error.
                    let reason = CloseReason::new(
                        ReplyCode::INVALID_PATH,
                        format!("virtual host cannot be sent: {error}"),
                        Initiator::Client,
                    );
                    self.finish(ConnectionError::Closed(reason));
                    return Ok(());
                }
                self.state = State::AwaitOpenOk;
                Ok(())
            }
            (State::AwaitOpenOk, Method::ConnectionOpenOk(_)) => {
                self.state = State::Open;
                let server_properties = std::mem::take(&mut self.server_properties);
                self.events.push_back(Event::Opened {
                    tuning: self.tuning,
                    server_properties,
                });
                self.start_replay();
                Ok(())
            }
            (state, Method::ConnectionClose(close)) => {
                self.sink().send(0, &ConnectionCloseOk {}.into());
                let text = close.reply_text.to_string_lossy().into_owned();
                let code = ReplyCode(close.reply_code);
                let error = match state {
                    State::AwaitTune if code == ReplyCode::ACCESS_REFUSED => {
                        ConnectionError::AuthenticationFailed(text)
                    }
                    State::AwaitOpenOk
                        if [
                            ReplyCode::ACCESS_REFUSED,
                            ReplyCode::NOT_ALLOWED,
                            ReplyCode::INVALID_PATH,
                        ]
                        .contains(&code) =>
                    {
                        ConnectionError::AccessRefused(text)
                    }
                    _ => ConnectionError::Closed(CloseReason::from_server(
                        close.reply_code,
                        &close.reply_text,
                        close.class_id,
                        close.method_id,
                    )),
                };
                self.finish(error);
                Ok(())
            }
            (_, method) => Err(ProtocolViolation::UnexpectedMethod {
                channel: 0,
                method: method.name(),
                why: "not expected during the handshake",
            }),
        }
    }

    fn handle_start(&mut self, start: ConnectionStart) -> Result<(), ProtocolViolation> {
        if (start.version_major, start.version_minor) != (0, 9) {
            return Err(ProtocolViolation::UnexpectedMethod {
                channel: 0,
                method: "connection.start",
                why: "it offers a protocol version other than 0-9",
            });
        }
        let mechanism = &self.config.mechanism;
        if !offered(&start.mechanisms, mechanism.name()) {
            self.output.clear();
            self.finish(ConnectionError::NoCommonMechanism {
                offered: start.mechanisms.to_string_lossy().into_owned(),
            });
            return Ok(());
        }
        let locale = if offered(&start.locales, &self.config.locale) {
            self.config.locale.clone()
        } else {
            start
                .locales
                .as_bytes()
                .split(|byte| *byte == b' ')
                .next()
                .map(|first| String::from_utf8_lossy(first).into_owned())
                .unwrap_or_default()
        };
        let start_ok = ConnectionStartOk {
            client_properties: self.config.client_properties_table(),
            mechanism: mechanism.name().into(),
            response: mechanism.initial_response(),
            locale: locale.as_str().into(),
        };
        if let Err(error) = self.send(0, &start_ok.into()) {
            let reason = CloseReason::new(
                ReplyCode::INTERNAL_ERROR,
                format!("start-ok cannot be sent: {error}"),
                Initiator::Client,
            );
            self.output.clear();
            self.finish(ConnectionError::Closed(reason));
            return Ok(());
        }
        self.server_properties = start.server_properties;
        self.state = State::AwaitTune;
        Ok(())
    }
}
