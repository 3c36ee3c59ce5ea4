//! kombu's process mailbox over the tokio adapter: broadcasting commands
//! to celery workers and collecting their replies, and serving commands as
//! a node. Every decision is [`amqp_io_common::pidbox`]'s; this module
//! only moves the messages and waits.
//!
//! ```no_run
//! use amqp_io_tokio::pidbox::{Broadcast, Mailbox};
//! use amqp_io_tokio::Connection;
//!
//! # async fn demo() -> amqp_io_tokio::Result<()> {
//! let connection = Connection::connect("amqp://guest:guest@127.0.0.1:5672/%2f").await?;
//! let mut mailbox = Mailbox::celery(&connection).await?;
//! for reply in mailbox.broadcast(&Broadcast::new("ping"), |_| {}).await? {
//!     println!("{reply}");
//! }
//! # Ok(()) }
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
    ///
    /// ```no_run
    /// use amqp_io_common::pidbox::{Mailbox as State, MailboxSettings};
    /// # async fn demo(connection: amqp_io_tokio::Connection) -> amqp_io_tokio::Result<()> {
    /// let state = State::new("myapp", MailboxSettings::celery());
    /// let mailbox = amqp_io_tokio::pidbox::Mailbox::new(&connection, state).await?;
    /// # Ok(()) }
    /// ```
    pub async fn new(connection: &Connection, mailbox: pidbox::Mailbox) -> Result<Self> {
        Ok(Self {
            mailbox,
            channel: connection.channel().await?,
        })
    }

    /// celery's mailbox.
    ///
    /// ```no_run
    /// # async fn demo(connection: amqp_io_tokio::Connection) -> amqp_io_tokio::Result<()> {
    /// let mailbox = amqp_io_tokio::pidbox::Mailbox::celery(&connection).await?;
    /// # Ok(()) }
    /// ```
    pub async fn celery(connection: &Connection) -> Result<Self> {
        Self::new(connection, pidbox::Mailbox::celery()).await
    }

    /// The bookkeeping (clock, unclaimed replies).
    ///
    /// ```no_run
    /// # fn demo(mailbox: amqp_io_tokio::pidbox::Mailbox) {
    /// println!("clock at {}", mailbox.state().clock().value());
    /// # }
    /// ```
    #[must_use]
    pub fn state(&self) -> &pidbox::Mailbox {
        &self.mailbox
    }

    /// The ticket of the last broadcast that wanted replies.
    ///
    /// ```no_run
    /// # fn demo(mailbox: amqp_io_tokio::pidbox::Mailbox) {
    /// println!("{:?}", mailbox.last_ticket());
    /// # }
    /// ```
    #[must_use]
    pub fn last_ticket(&self) -> Option<&str> {
        self.mailbox.last_ticket()
    }

    /// Broadcasts and, if asked, collects the replies as kombu does (see
    /// [`amqp_io_common::pidbox`]).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use amqp_io_tokio::pidbox::Broadcast;
    /// # async fn demo(mut mailbox: amqp_io_tokio::pidbox::Mailbox) -> amqp_io_tokio::Result<()> {
    /// let mut stats = Broadcast::new("stats");
    /// stats.timeout = Duration::from_secs(2);
    /// let replies = mailbox.broadcast(&stats, |reply| println!("{reply}")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn broadcast(
        &mut self,
        broadcast: &Broadcast,
        callback: impl FnMut(&Value),
    ) -> Result<Vec<Value>> {
        let plan = self.mailbox.broadcast(broadcast, unix_now());
        self.channel.exchange_declare(plan.exchange).await?;
        if let Some(topology) = plan.reply_topology {
            declare(&self.channel, topology).await?;
        }
        publish(&self.channel, plan.request).await?;
        let Some(collector) = plan.collector else {
            return Ok(Vec::new());
        };
        self.drain(collector, callback).await
    }

    /// Collects replies for `ticket` (kombu's `_collect`).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// # async fn demo(mut mailbox: amqp_io_tokio::pidbox::Mailbox, ticket: String) -> amqp_io_tokio::Result<()> {
    /// let late = mailbox.collect(&ticket, None, Duration::from_secs(1), |_| {}).await?;
    /// # Ok(()) }
    /// ```
    pub async fn collect(
        &mut self,
        ticket: &str,
        limit: Option<usize>,
        timeout: Duration,
        callback: impl FnMut(&Value),
    ) -> Result<Vec<Value>> {
        let collector = self.mailbox.collect(ticket, limit, timeout);
        self.drain(collector, callback).await
    }

    /// Runs a collect: its consumer of the reply queue, and the waits.
    async fn drain(
        &mut self,
        mut collector: Collector,
        mut callback: impl FnMut(&Value),
    ) -> Result<Vec<Value>> {
        let Some(consume) = collector.consume() else {
            return Ok(collector.replies);
        };
        let mut consumer = self.channel.basic_consume(consume).await?;
        while let Some(wait) = collector.wait() {
            let Ok(Some(delivery)) = tokio::time::timeout(wait, consumer.recv()).await else {
                break;
            };
            let delivery = delivery?;
            let outcome = self.mailbox.on_reply(&mut collector, &delivery, unix_now());
            if let Some(reply) = outcome.matched() {
                callback(reply);
            }
        }
        consumer.cancel().await?;
        Ok(collector.replies)
    }
}

/// Declares an exchange, then a queue, then binds them.
async fn declare(channel: &Channel, topology: Topology) -> Result<()> {
    let (exchange, queue, bind) = topology;
    channel.exchange_declare(exchange).await?;
    channel.queue_declare(queue).await?;
    channel.queue_bind(bind).await
}

/// Publishes a message of the mailbox's (no confirm is awaited).
async fn publish(channel: &Channel, message: Outgoing) -> Result<()> {
    let Outgoing {
        publish,
        properties,
        body,
    } = message;
    channel.publish(&publish, &properties, body).await?;
    Ok(())
}

/// A node answering mailbox commands, as a kombu or celery worker node
/// does.
///
/// ```no_run
/// use std::time::Duration;
/// use amqp_io_tokio::pidbox::{unknown_command, Node};
/// use serde_json::json;
///
/// # async fn demo(connection: amqp_io_tokio::Connection) -> amqp_io_tokio::Result<()> {
/// let mut node = Node::celery(&connection, "rust@localhost").await?;
/// loop {
///     node.serve(Duration::from_secs(1), |command| match command.method.as_str() {
///         "ping" => json!({"ok": "pong"}),
///         _ => unknown_command(command),
///     }).await?;
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Node {
    node: pidbox::Node,
    channel: Channel,
    consumer: Consumer,
}

impl Node {
    /// Declares the node's queue on a new channel and starts consuming it.
    ///
    /// ```no_run
    /// use amqp_io_common::pidbox::{MailboxSettings, Node as State};
    /// # async fn demo(connection: amqp_io_tokio::Connection) -> amqp_io_tokio::Result<()> {
    /// let state = State::new("rust@localhost", "myapp", MailboxSettings::celery());
    /// let node = amqp_io_tokio::pidbox::Node::new(&connection, state).await?;
    /// # Ok(()) }
    /// ```
    pub async fn new(connection: &Connection, node: pidbox::Node) -> Result<Self> {
        let channel = connection.channel().await?;
        declare(&channel, node.topology()).await?;
        let consumer = channel.basic_consume(node.consume()).await?;
        Ok(Self {
            node,
            channel,
            consumer,
        })
    }

    /// A node named `hostname` in celery's mailbox.
    ///
    /// ```no_run
    /// # async fn demo(connection: amqp_io_tokio::Connection) -> amqp_io_tokio::Result<()> {
    /// let node = amqp_io_tokio::pidbox::Node::celery(&connection, "rust@localhost").await?;
    /// # Ok(()) }
    /// ```
    pub async fn celery(connection: &Connection, hostname: &str) -> Result<Self> {
        Self::new(connection, pidbox::Node::celery(hostname)).await
    }

    /// The bookkeeping (name, clock).
    ///
    /// ```no_run
    /// # fn demo(node: amqp_io_tokio::pidbox::Node) {
    /// println!("{}", node.state().hostname());
    /// # }
    /// ```
    #[must_use]
    pub fn state(&self) -> &pidbox::Node {
        &self.node
    }

    /// Waits up to `timeout` for a command and answers it with `handler`'s
    /// result. Returns whether a command was handled.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// # async fn demo(mut node: amqp_io_tokio::pidbox::Node) -> amqp_io_tokio::Result<()> {
    /// node.serve(Duration::from_secs(1), |_| serde_json::json!({"ok": "pong"})).await?;
    /// # Ok(()) }
    /// ```
    pub async fn serve(
        &mut self,
        timeout: Duration,
        handler: impl FnMut(&Command) -> Value,
    ) -> Result<bool> {
        let delivery = match tokio::time::timeout(timeout, self.consumer.recv()).await {
            Ok(Some(delivery)) => delivery?,
            Ok(None) => {
                let tag = self.consumer.tag().to_string();
                return Err(Error::ConsumerCancelled(tag));
            }
            Err(_) => return Ok(false),
        };
        let answer = self.node.answer(&delivery, handler);
        if let Some((exchange, reply)) = answer.reply {
            self.channel.exchange_declare(exchange).await?;
            publish(&self.channel, reply).await?;
        }
        Ok(answer.handled)
    }
}
