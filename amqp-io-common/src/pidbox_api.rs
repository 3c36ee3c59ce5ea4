//! kombu's process mailbox over either adapter, written once: the
//! [`pidbox`](crate::pidbox) module decides everything, this glue only
//! declares, publishes and waits through the adapter's channel calls, which
//! have the same names in both.
//!
//! Not public API, for the reason `channel_api` gives.

/// Writes an adapter's `pidbox` module items: `Mailbox` and `Node` over
/// the adapter's `Connection`, `Channel` and `Consumer` (whose
/// `recv_timeout` fails with `Error::Timeout` when nothing came).
///
/// `krate` is the adapter crate's name; `demo` opens each example with a
/// `connection` in scope; the other arguments are those of `channel_api!`.
#[doc(hidden)]
#[macro_export]
// `crate::` names the adapter's own types, at the call site, on purpose.
#[allow(clippy::crate_in_macro_def)]
macro_rules! pidbox_api {
    (
        krate = $krate:ident,
        asyncness = [$($asyncness:tt)*],
        awaiting = [$($awaiting:tt)*],
        demo = $demo:literal,
        suffix = $suffix:literal $(,)?
    ) => {
        pub use $crate::pidbox::{unknown_command, Broadcast, Command};

        /// A mailbox bound to a channel of its own.
        #[derive(Debug)]
        pub struct Mailbox {
            mailbox: $crate::pidbox::Mailbox,
            channel: crate::Channel,
        }

        impl Mailbox {
            #[doc = "A mailbox on a new channel of `connection`."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "use amqp_io_common::pidbox::{Mailbox as State, MailboxSettings};"]
            #[doc = ""]
            #[doc = "let state = State::new(\"myapp\", MailboxSettings::celery());"]
            #[doc = concat!("let mailbox = ", stringify!($krate), "::pidbox::Mailbox::new(&connection, state)", $suffix, "?;")]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub $($asyncness)* fn new(
                connection: &crate::Connection,
                mailbox: $crate::pidbox::Mailbox,
            ) -> $crate::Result<Self> {
                Ok(Self {
                    mailbox,
                    channel: connection.channel() $($awaiting)* ?,
                })
            }

            #[doc = "celery's mailbox (`celery.pidbox`, celery's queue settings)."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = concat!("let mailbox = ", stringify!($krate), "::pidbox::Mailbox::celery(&connection)", $suffix, "?;")]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub $($asyncness)* fn celery(connection: &crate::Connection) -> $crate::Result<Self> {
                Self::new(connection, $crate::pidbox::Mailbox::celery()) $($awaiting)*
            }

            /// The bookkeeping (clock, unclaimed replies).
            #[must_use]
            pub fn state(&self) -> &$crate::pidbox::Mailbox {
                &self.mailbox
            }

            /// The ticket of the last broadcast that wanted replies.
            #[must_use]
            pub fn last_ticket(&self) -> Option<&str> {
                self.mailbox.last_ticket()
            }

            #[doc = "Broadcasts and, if asked, collects the replies as kombu does:"]
            #[doc = "`callback` sees each matching reply as it arrives; the call returns"]
            #[doc = "them all when `limit` deliveries were counted or no delivery came"]
            #[doc = "for `timeout`."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "use std::time::Duration;"]
            #[doc = concat!("use ", stringify!($krate), "::pidbox::{Broadcast, Mailbox};")]
            #[doc = ""]
            #[doc = concat!("let mut mailbox = Mailbox::celery(&connection)", $suffix, "?;")]
            #[doc = "let mut stats = Broadcast::new(\"stats\");"]
            #[doc = "stats.timeout = Duration::from_secs(2);"]
            #[doc = concat!("let replies = mailbox.broadcast(&stats, |reply| println!(\"{reply}\"))", $suffix, "?;")]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub $($asyncness)* fn broadcast(
                &mut self,
                broadcast: &Broadcast,
                callback: impl FnMut(&::serde_json::Value),
            ) -> $crate::Result<Vec<::serde_json::Value>> {
                let plan = self.mailbox.broadcast(broadcast, $crate::pidbox::unix_now());
                self.channel.exchange_declare(plan.exchange) $($awaiting)* ?;
                if let Some(topology) = plan.reply_topology {
                    declare(&self.channel, topology) $($awaiting)* ?;
                }
                publish(&self.channel, plan.request) $($awaiting)* ?;
                match plan.collector {
                    Some(collector) => self.drain(collector, callback) $($awaiting)*,
                    None => Ok(Vec::new()),
                }
            }

            #[doc = "Collects replies for `ticket` (kombu's `_collect`): replies kept"]
            #[doc = "aside for it by earlier collects are returned at once; otherwise"]
            #[doc = "deliveries are counted up to `limit`, waiting at most `timeout` for"]
            #[doc = "each. The reply queue must exist (a broadcast declares it)."]
            pub $($asyncness)* fn collect(
                &mut self,
                ticket: &str,
                limit: Option<usize>,
                timeout: ::std::time::Duration,
                callback: impl FnMut(&::serde_json::Value),
            ) -> $crate::Result<Vec<::serde_json::Value>> {
                let collector = self.mailbox.collect(ticket, limit, timeout);
                self.drain(collector, callback) $($awaiting)*
            }

            /// Runs a collect: its consumer of the reply queue, and the
            /// waits.
            $($asyncness)* fn drain(
                &mut self,
                mut collector: $crate::pidbox::Collector,
                mut callback: impl FnMut(&::serde_json::Value),
            ) -> $crate::Result<Vec<::serde_json::Value>> {
                let Some(consume) = collector.consume() else {
                    return Ok(collector.replies);
                };
                #[allow(unused_mut)] // only the async consumer reads through `&mut`
                let mut consumer = self.channel.basic_consume(consume) $($awaiting)* ?;
                while let Some(wait) = collector.wait() {
                    let delivery = match consumer.recv_timeout(wait) $($awaiting)* {
                        Ok(delivery) => delivery,
                        Err($crate::Error::Timeout { .. }) => break,
                        Err(error) => return Err(error),
                    };
                    let now = $crate::pidbox::unix_now();
                    let outcome = self.mailbox.on_reply(&mut collector, &delivery, now);
                    if let Some(reply) = outcome.matched() {
                        callback(reply);
                    }
                }
                consumer.cancel() $($awaiting)* ?;
                Ok(collector.replies)
            }
        }

        /// Declares an exchange, then a queue, then binds them.
        $($asyncness)* fn declare(
            channel: &crate::Channel,
            (exchange, queue, bind): $crate::pidbox::Topology,
        ) -> $crate::Result<()> {
            channel.exchange_declare(exchange) $($awaiting)* ?;
            channel.queue_declare(queue) $($awaiting)* ?;
            channel.queue_bind(bind) $($awaiting)*
        }

        /// Publishes a message of the mailbox's (no confirm is awaited).
        $($asyncness)* fn publish(
            channel: &crate::Channel,
            message: $crate::pidbox::Outgoing,
        ) -> $crate::Result<()> {
            channel
                .publish(&message.publish, &message.properties, message.body)
                $($awaiting)* ?;
            Ok(())
        }

        #[doc = "A node answering mailbox commands, as a kombu (or celery worker)"]
        #[doc = "node does."]
        #[doc = ""]
        #[doc = "```no_run"]
        #[doc = $demo]
        #[doc = "use std::time::Duration;"]
        #[doc = concat!("use ", stringify!($krate), "::pidbox::{unknown_command, Node};")]
        #[doc = "use serde_json::json;"]
        #[doc = ""]
        #[doc = concat!("let mut node = Node::celery(&connection, \"rust@localhost\")", $suffix, "?;")]
        #[doc = "loop {"]
        #[doc = "    node.serve(Duration::from_secs(1), |command| match command.method.as_str() {"]
        #[doc = "        \"ping\" => json!({\"ok\": \"pong\"}),"]
        #[doc = "        _ => unknown_command(command),"]
        #[doc = concat!("    })", $suffix, "?;")]
        #[doc = "}"]
        #[doc = "# }"]
        #[doc = "```"]
        #[derive(Debug)]
        pub struct Node {
            node: $crate::pidbox::Node,
            channel: crate::Channel,
            consumer: crate::Consumer,
        }

        impl Node {
            /// Declares the node's queue on a new channel and starts
            /// consuming it.
            pub $($asyncness)* fn new(
                connection: &crate::Connection,
                node: $crate::pidbox::Node,
            ) -> $crate::Result<Self> {
                let channel = connection.channel() $($awaiting)* ?;
                declare(&channel, node.topology()) $($awaiting)* ?;
                let consumer = channel.basic_consume(node.consume()) $($awaiting)* ?;
                Ok(Self {
                    node,
                    channel,
                    consumer,
                })
            }

            /// A node named `hostname` in celery's mailbox.
            pub $($asyncness)* fn celery(
                connection: &crate::Connection,
                hostname: &str,
            ) -> $crate::Result<Self> {
                Self::new(connection, $crate::pidbox::Node::celery(hostname)) $($awaiting)*
            }

            /// The bookkeeping (name, clock).
            #[must_use]
            pub fn state(&self) -> &$crate::pidbox::Node {
                &self.node
            }

            /// Waits up to `timeout` for a command and answers it with
            /// `handler`'s result (if the sender wants one). Returns whether
            /// a command was handled; commands for other nodes are skipped.
            /// The consumer's end (the queue deleted, the channel closed)
            /// is an error.
            pub $($asyncness)* fn serve(
                &mut self,
                timeout: ::std::time::Duration,
                handler: impl FnMut(&Command) -> ::serde_json::Value,
            ) -> $crate::Result<bool> {
                let delivery = match self.consumer.recv_timeout(timeout) $($awaiting)* {
                    Ok(delivery) => delivery,
                    Err($crate::Error::Timeout { .. }) => return Ok(false),
                    Err(error) => return Err(error),
                };
                let answer = self.node.answer(&delivery, handler);
                if let Some((exchange, reply)) = answer.reply {
                    self.channel.exchange_declare(exchange) $($awaiting)* ?;
                    publish(&self.channel, reply) $($awaiting)* ?;
                }
                Ok(answer.handled)
            }
        }
    };
}
