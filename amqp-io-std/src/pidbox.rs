//! kombu's process mailbox over the blocking adapter: broadcasting
//! commands to celery workers (`celery inspect` / `celery control`) and
//! collecting their replies, and serving commands as a node. Every
//! decision is [`amqp_io_common::pidbox`]'s; this module only moves the
//! messages and waits.
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

use std::time::Duration;

use amqp_io_common::pidbox::{self, unix_now, Collector, Outgoing, Topology};
pub use amqp_io_common::pidbox::{unknown_command, Broadcast, Command};
use amqp_io_common::{Error, Result};
use serde_json::Value;

use crate::{Channel, Connection, Consumer};

/// A mailbox bound to a channel of its own.
#[derive(Debug)]
pub struct Mailbox {
    mailbox: pidbox::Mailbox,
    channel: Channel,
}

impl Mailbox {
    /// A mailbox on a new channel of `connection`.
    pub fn new(connection: &Connection, mailbox: pidbox::Mailbox) -> Result<Self> {
        Ok(Self {
            mailbox,
            channel: connection.channel()?,
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
        let plan = self.mailbox.broadcast(broadcast, unix_now());
        self.channel.exchange_declare(plan.exchange)?;
        if let Some(topology) = plan.reply_topology {
            declare(&self.channel, topology)?;
        }
        publish(&self.channel, plan.request)?;
        match plan.collector {
            Some(collector) => self.drain(collector, callback),
            None => Ok(Vec::new()),
        }
    }

    /// The ticket of the last broadcast that wanted replies.
    #[must_use]
    pub fn last_ticket(&self) -> Option<&str> {
        self.mailbox.last_ticket()
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
        callback: impl FnMut(&Value),
    ) -> Result<Vec<Value>> {
        let collector = self.mailbox.collect(ticket, limit, timeout);
        self.drain(collector, callback)
    }

    /// Runs a collect: the waiting and the reply queue's consumer.
    fn drain(
        &mut self,
        mut collector: Collector,
        mut callback: impl FnMut(&Value),
    ) -> Result<Vec<Value>> {
        let Some(consume) = collector.consume() else {
            return Ok(collector.replies);
        };
        let consumer = self.channel.basic_consume(consume)?;
        while let Some(wait) = collector.wait() {
            let delivery = match consumer.recv_timeout(wait) {
                Ok(delivery) => delivery,
                Err(Error::Timeout { .. }) => break,
                Err(error) => return Err(error),
            };
            let outcome = self.mailbox.on_reply(&mut collector, &delivery, unix_now());
            if let Some(reply) = outcome.matched() {
                callback(reply);
            }
        }
        consumer.cancel()?;
        Ok(collector.replies)
    }
}

/// Declares an exchange, a queue and their binding.
fn declare(channel: &Channel, (exchange, queue, bind): Topology) -> Result<()> {
    channel.exchange_declare(exchange)?;
    channel.queue_declare(queue)?;
    channel.queue_bind(bind)
}

/// Publishes one of the mailbox's messages.
fn publish(channel: &Channel, message: Outgoing) -> Result<()> {
    channel.publish(&message.publish, &message.properties, message.body)?;
    Ok(())
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
        declare(&channel, node.topology())?;
        let consumer = channel.basic_consume(node.consume())?;
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
        handler: impl FnMut(&Command) -> Value,
    ) -> Result<bool> {
        let delivery = match self.consumer.recv_timeout(timeout) {
            Ok(delivery) => delivery,
            Err(Error::Timeout { .. }) => return Ok(false),
            Err(error) => return Err(error),
        };
        let answer = self.node.answer(&delivery, handler);
        if let Some((exchange, reply)) = answer.reply {
            self.channel.exchange_declare(exchange)?;
            publish(&self.channel, reply)?;
        }
        Ok(answer.handled)
    }
}
