//! kombu's process mailbox over the tokio adapter: broadcasting commands
//! to celery workers and collecting their replies, and serving commands as
//! a node. The bookkeeping is [`amqp_io_common::pidbox`]'s.
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

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use amqp_io_common::pidbox::{self, ReplyOutcome};
pub use amqp_io_common::pidbox::{Broadcast, Command};
use amqp_io_common::Result;
use amqp_proto::spec::BasicConsume;
use serde_json::Value;

use crate::{Channel, Connection, Consumer};

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
            last_ticket: None,
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
        self.last_ticket.as_deref()
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
        self.channel
            .exchange_declare(self.mailbox.exchange_declare())
            .await?;
        if broadcast.reply {
            let (exchange, queue, bind) = self.mailbox.reply_topology();
            self.channel.exchange_declare(exchange).await?;
            self.channel.queue_declare(queue).await?;
            self.channel.queue_bind(bind).await?;
        }
        let request = self.mailbox.request(broadcast, unix_now());
        self.channel
            .publish(&request.publish, &request.properties, request.body)
            .await?;
        let Some(ticket) = request.ticket else {
            return Ok(Vec::new());
        };
        self.last_ticket = Some(ticket.clone());
        let limit = broadcast
            .limit
            .or_else(|| broadcast.destination.as_ref().map(Vec::len));
        self.collect(&ticket, limit, broadcast.timeout, callback)
            .await
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
        mut callback: impl FnMut(&Value),
    ) -> Result<Vec<Value>> {
        let mut collector = self.mailbox.collect(ticket, limit);
        if collector.is_complete() {
            return Ok(collector.replies);
        }
        let consume = BasicConsume {
            queue: self.mailbox.reply_queue().into(),
            no_ack: true,
            ..Default::default()
        };
        let mut consumer = self.channel.basic_consume(consume).await?;
        while !collector.is_complete() {
            let delivery = match tokio::time::timeout(timeout, consumer.recv()).await {
                Ok(Some(delivery)) => delivery?,
                Ok(None) | Err(_) => break,
            };
            if let ReplyOutcome::Matched(reply) =
                self.mailbox.on_reply(&mut collector, &delivery, unix_now())
            {
                callback(&reply);
            }
        }
        self.channel
            .basic_cancel(&consumer.tag().to_string_lossy())
            .await?;
        Ok(collector.replies)
    }
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

pub use amqp_io_common::pidbox::unknown_command;

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
        let (exchange, queue, bind) = node.topology();
        channel.exchange_declare(exchange).await?;
        channel.queue_declare(queue).await?;
        channel.queue_bind(bind).await?;
        let consume = BasicConsume {
            queue: node.queue().into(),
            no_ack: true,
            ..Default::default()
        };
        let consumer = channel.basic_consume(consume).await?;
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
        mut handler: impl FnMut(&Command) -> Value,
    ) -> Result<bool> {
        let delivery = match tokio::time::timeout(timeout, self.consumer.recv()).await {
            Ok(Some(delivery)) => delivery?,
            Ok(None) => {
                return Err(amqp_io_common::Error::ConsumerCancelled(
                    self.consumer.tag().to_string(),
                ))
            }
            Err(_) => return Ok(false),
        };
        let Some(command) = self.node.receive(&delivery) else {
            return Ok(false);
        };
        let result = handler(&command);
        if let Some((exchange, reply)) = self.node.reply(&command, result) {
            self.channel.exchange_declare(exchange).await?;
            self.channel
                .publish(&reply.publish, &reply.properties, reply.body)
                .await?;
        }
        Ok(true)
    }
}
