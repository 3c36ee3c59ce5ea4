//! kombu's process mailbox over the blocking adapter: broadcasting
//! commands to celery workers (`celery inspect` / `celery control`) and
//! collecting their replies, and serving commands as a node. The
//! bookkeeping is [`amqp_io_common::pidbox`]'s; this module only moves the
//! messages.
//!
//! ```no_run
//! use std::time::Duration;
//! use amqp_io_std::pidbox::{Broadcast, Mailbox};
//! use amqp_io_std::Connection;
//!
//! let connection = Connection::open("amqp://guest:guest@127.0.0.1:5672/%2f")?;
//! let mut mailbox = Mailbox::celery(&connection)?;
//! // `celery inspect ping`: every worker answers within a second.
//! for reply in mailbox.broadcast(&Broadcast::new("ping"), |_| {})? {
//!     println!("{reply}"); // {"celery@host": {"ok": "pong"}}
//! }
//! # Ok::<(), amqp_io_std::Error>(())
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use amqp_io_common::pidbox::{self, ReplyOutcome};
pub use amqp_io_common::pidbox::{unknown_command, Broadcast, Command};
use amqp_io_common::{Error, Result};
use amqp_proto::spec::BasicConsume;
use serde_json::Value;

use crate::{Channel, Connection, Consumer};

/// The current time as Unix seconds, as kombu's headers carry it.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

/// A mailbox bound to a channel of its own.
#[derive(Debug)]
pub struct Mailbox {
    mailbox: pidbox::Mailbox,
    channel: Channel,
    last_ticket: Option<String>,
}

impl Mailbox {
    /// A mailbox on a new channel of `connection`.
    pub fn new(connection: &Connection, mailbox: pidbox::Mailbox) -> Result<Self> {
        Ok(Self {
            mailbox,
            channel: connection.channel()?,
            last_ticket: None,
        })
    }

    /// celery's mailbox (`celery.pidbox`, celery's queue settings).
    pub fn celery(connection: &Connection) -> Result<Self> {
        Self::new(connection, pidbox::Mailbox::celery())
    }

    /// The bookkeeping (clock, unclaimed replies).
    #[must_use]
    pub fn state(&self) -> &pidbox::Mailbox {
        &self.mailbox
    }

    /// Broadcasts and, if asked, collects the replies as kombu does:
    /// `callback` sees each matching reply as it arrives; the call returns
    /// them all when `limit` deliveries were counted or no delivery came
    /// for `timeout`.
    pub fn broadcast(
        &mut self,
        broadcast: &Broadcast,
        callback: impl FnMut(&Value),
    ) -> Result<Vec<Value>> {
        self.channel
            .exchange_declare(self.mailbox.exchange_declare())?;
        if broadcast.reply {
            // Exclusive and auto-deleted: declared again for each broadcast.
            let (exchange, queue, bind) = self.mailbox.reply_topology();
            self.channel.exchange_declare(exchange)?;
            self.channel.queue_declare(queue)?;
            self.channel.queue_bind(bind)?;
        }
        let request = self.mailbox.request(broadcast, unix_now());
        self.channel
            .publish(&request.publish, &request.properties, request.body)?;
        let Some(ticket) = request.ticket else {
            return Ok(Vec::new());
        };
        self.last_ticket = Some(ticket.clone());
        let limit = broadcast
            .limit
            .or_else(|| broadcast.destination.as_ref().map(Vec::len));
        self.collect(&ticket, limit, broadcast.timeout, callback)
    }

    /// The ticket of the last broadcast that wanted replies.
    #[must_use]
    pub fn last_ticket(&self) -> Option<&str> {
        self.last_ticket.as_deref()
    }

    /// Collects replies for `ticket` (kombu's `_collect`): replies kept
    /// aside for it by earlier collects are returned at once; otherwise
    /// deliveries are counted up to `limit`, waiting at most `timeout` for
    /// each. The reply queue must exist (a broadcast declares it).
    pub fn collect(
        &mut self,
        ticket: &str,
        limit: Option<usize>,
        timeout: Duration,
        mut callback: impl FnMut(&Value),
    ) -> Result<Vec<Value>> {
        let mut collector = self.mailbox.collect(ticket, limit);
        if collector.is_complete() {
            return Ok(collector.replies);
        }
        let consumer = self.channel.consume(BasicConsume {
            queue: self.mailbox.reply_queue().into(),
            no_ack: true,
            ..Default::default()
        })?;
        while !collector.is_complete() {
            let delivery = match consumer.recv_timeout(timeout) {
                Ok(delivery) => delivery,
                Err(Error::Timeout { .. }) => break,
                Err(error) => return Err(error),
            };
            if let ReplyOutcome::Matched(reply) =
                self.mailbox.on_reply(&mut collector, &delivery, unix_now())
            {
                callback(&reply);
            }
        }
        consumer.cancel()?;
        Ok(collector.replies)
    }
}

/// A node answering mailbox commands, as a kombu (or celery worker) node
/// does.
///
/// ```no_run
/// use std::time::Duration;
/// use amqp_io_std::pidbox::{unknown_command, Node};
/// use amqp_io_std::Connection;
/// use serde_json::json;
///
/// let connection = Connection::open("amqp://localhost")?;
/// let mut node = Node::celery(&connection, "rust@localhost")?;
/// loop {
///     node.serve(Duration::from_secs(1), |command| match command.method.as_str() {
///         "ping" => json!({"ok": "pong"}),
///         _ => unknown_command(command),
///     })?;
/// }
/// # Ok::<(), amqp_io_std::Error>(())
/// ```
#[derive(Debug)]
pub struct Node {
    node: pidbox::Node,
    channel: Channel,
    consumer: Consumer,
}

impl Node {
    /// Declares the node's queue on a new channel and starts consuming it.
    pub fn new(connection: &Connection, node: pidbox::Node) -> Result<Self> {
        let channel = connection.channel()?;
        let (exchange, queue, bind) = node.topology();
        channel.exchange_declare(exchange)?;
        channel.queue_declare(queue)?;
        channel.queue_bind(bind)?;
        let consumer = channel.consume(BasicConsume {
            queue: node.queue().into(),
            no_ack: true,
            ..Default::default()
        })?;
        Ok(Self {
            node,
            channel,
            consumer,
        })
    }

    /// A node named `hostname` in celery's mailbox.
    pub fn celery(connection: &Connection, hostname: &str) -> Result<Self> {
        Self::new(connection, pidbox::Node::celery(hostname))
    }

    /// The bookkeeping (name, clock).
    #[must_use]
    pub fn state(&self) -> &pidbox::Node {
        &self.node
    }

    /// Waits up to `timeout` for a command and answers it with `handler`'s
    /// result (if the sender wants one). Returns whether a command was
    /// handled; commands for other nodes are skipped.
    pub fn serve(
        &mut self,
        timeout: Duration,
        mut handler: impl FnMut(&Command) -> Value,
    ) -> Result<bool> {
        let delivery = match self.consumer.recv_timeout(timeout) {
            Ok(delivery) => delivery,
            Err(Error::Timeout { .. }) => return Ok(false),
            Err(error) => return Err(error),
        };
        let Some(command) = self.node.receive(&delivery) else {
            return Ok(false);
        };
        let result = handler(&command);
        if let Some((exchange, reply)) = self.node.reply(&command, result) {
            self.channel.exchange_declare(exchange)?;
            self.channel
                .publish(&reply.publish, &reply.properties, reply.body)?;
        }
        Ok(true)
    }
}
