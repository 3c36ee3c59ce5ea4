//! The connection calls both adapters offer, written once: what the
//! session knows (tuning, the server's properties, the broker's block, the
//! end and its reason, recovery) and the close. An adapter's `Connection`
//! adds only how it connects, waits and opens channels.
//!
//! Not public API, for the reason `channel_api` gives.

/// Writes the shared methods of an adapter's `Connection`.
///
/// The type must have the field `operation_timeout: std::time::Duration`
/// and these methods:
///
/// - `fn state(&self) -> MutexGuard<'_, S>`, the session's lock (`S`
///   dereferences to [`Session`](crate::session::Session));
/// - `fn begin_close(&self, start: impl FnOnce(&mut S, Instant) -> Result<bool>) -> Result<bool>`
///   runs `start` (a [`Session`](crate::session::Session) close) under the
///   lock and sends what it queued;
/// - `fn finish_close(&self, handshake: bool) -> Result<()>`, `async` in
///   an async adapter, waits for the end and reports
///   [`Session::close_outcome`](crate::session::Session::close_outcome).
///
/// `krate` is the adapter crate's name; the other arguments are those of
/// `channel_api!`.
#[doc(hidden)]
#[macro_export]
macro_rules! connection_api {
    (
        type = $connection:ty,
        krate = $krate:ident,
        asyncness = [$($asyncness:tt)*],
        awaiting = [$($awaiting:tt)*],
        demo = $demo:literal,
        suffix = $suffix:literal $(,)?
    ) => {
        impl ::std::fmt::Debug for $connection {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct("Connection")
                    .field("operation_timeout", &self.operation_timeout)
                    .finish_non_exhaustive()
            }
        }

        impl $connection {
            #[doc = "The limits negotiated with the server."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "let tuning = connection.tuning();"]
            #[doc = "println!(\"frame_max {} channel_max {} heartbeat {}s\", tuning.frame_max, tuning.channel_max, tuning.heartbeat);"]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            #[must_use]
            pub fn tuning(&self) -> ::amqp_proto::Tuning {
                self.state().core.tuning()
            }

            #[doc = "The address (of the options' [`addresses`](crate::ConnectOptions::addresses))"]
            #[doc = "the connection is on: the node it opened on, or the one a recovery"]
            #[doc = "moved it to (while it recovers, the node it lost)."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "println!(\"connected to {}\", connection.connected_address());"]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            #[must_use]
            pub fn connected_address(&self) -> $crate::Address {
                let state = self.state();
                let index = state.address();
                state
                    .options()
                    .and_then(|options| options.addresses.get(index))
                    .cloned()
                    .unwrap_or_else(|| $crate::Address::new("", 0))
            }

            #[doc = "What the server said about itself: product, version, capabilities."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "use amqp_proto::codec::FieldValue;"]
            #[doc = ""]
            #[doc = "if let Some(FieldValue::LongString(version)) = connection.server_properties().get(\"version\") {"]
            #[doc = "    println!(\"RabbitMQ {version}\");"]
            #[doc = "}"]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            #[must_use]
            pub fn server_properties(&self) -> ::amqp_proto::codec::FieldTable {
                self.state().server_properties()
            }

            #[doc = "The broker's reason while it blocks publishing on this connection"]
            #[doc = "(a memory or disk alarm); `None` otherwise. Publishes wait while"]
            #[doc = "blocked (up to their channel's timeout)."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "if let Some(reason) = connection.blocked() {"]
            #[doc = "    eprintln!(\"the broker blocks publishing: {reason}\");"]
            #[doc = "}"]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            #[must_use]
            pub fn blocked(&self) -> Option<String> {
                self.state().blocked().map(str::to_owned)
            }

            #[doc = "True until the connection ends."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "if !connection.is_open() {"]
            #[doc = "    eprintln!(\"connection lost: {:?}\", connection.close_reason());"]
            #[doc = "}"]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            #[must_use]
            pub fn is_open(&self) -> bool {
                self.state().closed().is_none()
            }

            #[doc = "What went over the connection so far: bytes, frames, heartbeats,"]
            #[doc = "publishes, confirms, deliveries, settlements (messages, `multiple`"]
            #[doc = "counted exactly), blocked time, recoveries; the counters summed over"]
            #[doc = "every socket a recovery opened, the gauges (open channels,"]
            #[doc = "consumers, unconfirmed, unsettled) as they are now. A snapshot, cheap"]
            #[doc = "to take: see [`Stats`](amqp_proto::Stats)."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "let stats = connection.stats();"]
            #[doc = "println!(\"{} published, {} confirmed\", stats.publishes, stats.confirms_acked);"]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            #[must_use]
            pub fn stats(&self) -> ::amqp_proto::Stats {
                self.state().stats()
            }

            #[doc = "Why the connection ended, once it has."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "if let Some(reason) = connection.close_reason() {"]
            #[doc = "    eprintln!(\"connection ended: {reason}\");"]
            #[doc = "}"]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            #[must_use]
            pub fn close_reason(&self) -> Option<::amqp_proto::ConnectionError> {
                self.state().closed().cloned()
            }

            #[doc = "True while a failed connection is being recovered: calls fail with"]
            #[doc = "a typed error until"]
            #[doc = "[`RecoveryEvent::Recovered`]($crate::recovery::RecoveryEvent::Recovered)."]
            #[must_use]
            pub fn is_recovering(&self) -> bool {
                let state = self.state();
                state.is_recovering() && state.closed().is_none()
            }

            #[doc = "Handles the reports of automatic recovery (see"]
            #[doc = "[`ConnectOptions::recovery`]($crate::ConnectOptions::recovery)): failure,"]
            #[doc = "failed attempts, recovery with renamed queues and refused"]
            #[doc = "declarations, or giving up. The handler runs without the"]
            #[doc = "connection's lock, on whichever thread or task drives the"]
            #[doc = "connection at the time, so it must return quickly; it may use the"]
            #[doc = "connection."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = concat!("use ", stringify!($krate), "::RecoveryEvent;")]
            #[doc = ""]
            #[doc = "connection.on_recovery(|event| match event {"]
            #[doc = "    RecoveryEvent::Started { error } => eprintln!(\"connection lost: {error}\"),"]
            #[doc = "    RecoveryEvent::Recovered { .. } => eprintln!(\"recovered\"),"]
            #[doc = "    other => eprintln!(\"{other:?}\"),"]
            #[doc = "});"]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub fn on_recovery(
                &self,
                handler: impl FnMut(&$crate::recovery::RecoveryEvent) + Send + 'static,
            ) {
                self.state().set_recovery_handler(Box::new(handler));
            }

            #[doc = "Closes the connection with reply code 200 and waits for the server's"]
            #[doc = "`close-ok` (bounded by"]
            #[doc = "[`Config::close_timeout`](amqp_proto::Config::close_timeout)). Outstanding"]
            #[doc = "calls fail with [`Error::ConnectionClosed`](crate::Error::ConnectionClosed),"]
            #[doc = "unconfirmed publishes too (see"]
            #[doc = "[`close_when_confirmed`](Self::close_when_confirmed) to wait for them)."]
            #[doc = "Takes `&self` in both adapters: the handle stays for"]
            #[doc = "[`close_reason`](Self::close_reason) and [`is_open`](Self::is_open);"]
            #[doc = "closing again fails with `Error::ConnectionClosed`. Between a"]
            #[doc = "failure and the next attempt of a recovery there is nothing to"]
            #[doc = "close: recovery gives up, and the close succeeds at once."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = concat!("connection.close()", $suffix, "?;")]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub $($asyncness)* fn close(&self) -> $crate::Result<()> {
                self.close_with(
                    ::amqp_proto::spec::constants::ReplyCode::REPLY_SUCCESS,
                    "closed by the application",
                ) $($awaiting)*
            }

            #[doc = "Closes with a reply code and text of the application's choosing;"]
            #[doc = "otherwise as [`close`](Self::close)."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "use amqp_proto::spec::constants::ReplyCode;"]
            #[doc = ""]
            #[doc = concat!("connection.close_with(ReplyCode::REPLY_SUCCESS, \"shutting down for maintenance\")", $suffix, "?;")]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub $($asyncness)* fn close_with(
                &self,
                code: ::amqp_proto::spec::constants::ReplyCode,
                text: &str,
            ) -> $crate::Result<()> {
                let handshake = self.begin_close(|session, now| session.close(code, text, now))?;
                self.finish_close(handshake) $($awaiting)*
            }

            #[doc = "Closes gracefully: new publishes and channels are refused at once,"]
            #[doc = "every publish awaiting its confirm gets it (for up to `timeout`),"]
            #[doc = "then the connection closes as [`close`](Self::close) does. Only what"]
            #[doc = "is still unconfirmed after `timeout` fails."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = concat!("connection.close_when_confirmed(std::time::Duration::from_secs(10))", $suffix, "?;")]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub $($asyncness)* fn close_when_confirmed(
                &self,
                timeout: ::std::time::Duration,
            ) -> $crate::Result<()> {
                let handshake = self.begin_close(|session, now| {
                    // A timeout past what an Instant holds means "no deadline":
                    // about 136 years is as good.
                    let patience = timeout.min(::std::time::Duration::from_secs(1 << 32));
                    let deadline = now.checked_add(patience).unwrap_or(now);
                    session.close_when_confirmed(
                        ::amqp_proto::spec::constants::ReplyCode::REPLY_SUCCESS,
                        "closed by the application",
                        deadline,
                        now,
                    )
                })?;
                self.finish_close(handshake) $($awaiting)*
            }
        }
    };
}
