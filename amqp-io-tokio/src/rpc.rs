//! Request/reply over RabbitMQ's direct reply-to: an [`RpcClient`] with
//! many requests in flight, each with its own timeout, and [`serve`] for
//! the other side. Conventions in [`amqp_io_common::rpc`].
//!
//! ```no_run
//! use std::time::Duration;
//! use amqp_io_tokio::rpc::RpcClient;
//! use amqp_proto::codec::BasicProperties;
//!
//! # async fn demo(connection: amqp_io_tokio::Connection) -> amqp_io_tokio::Result<()> {
//! let client = RpcClient::new(&connection).await?;
//! let reply = client
//!     .call("", "rpc.square", BasicProperties::default(), "12", Duration::from_secs(5))
//!     .await?;
//! println!("{:?}", reply.body());
//! # Ok(()) }
//! ```

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use amqp_io_common::rpc::{self, Call, Calls};
use amqp_io_common::{Error, Result};
use amqp_proto::codec::BasicProperties;
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::{Channel, Connection, Consumer};
use amqp_proto::Delivery;

/// The calls in flight, each with the sender its reply goes through (taken
/// when the reply comes).
type Waiters = Arc<Mutex<Calls<Option<oneshot::Sender<Delivery>>>>>;

fn lock(waiters: &Waiters) -> MutexGuard<'_, Calls<Option<oneshot::Sender<Delivery>>>> {
    waiters.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sends requests and awaits their replies through direct reply-to. Cheap
/// to share (`Arc`) between tasks; many calls may be in flight at once.
///
/// A reply that comes after its call timed out (or was dropped) finds no
/// waiter and is discarded; nothing is kept for it.
#[derive(Debug)]
pub struct RpcClient {
    channel: Channel,
    waiters: Waiters,
    router: tokio::task::JoinHandle<()>,
}

impl Drop for RpcClient {
    fn drop(&mut self) {
        self.router.abort();
    }
}

impl RpcClient {
    /// Opens a channel and starts consuming `amq.rabbitmq.reply-to` (before
    /// any request is published, as RabbitMQ requires).
    ///
    /// ```no_run
    /// # async fn demo(connection: amqp_io_tokio::Connection) -> amqp_io_tokio::Result<()> {
    /// let client = amqp_io_tokio::rpc::RpcClient::new(&connection).await?;
    /// # Ok(()) }
    /// ```
    pub async fn new(connection: &Connection) -> Result<Self> {
        let channel = connection.channel().await?;
        let replies = channel.basic_consume(rpc::reply_consume()).await?;
        let waiters: Waiters = Arc::default();
        let router = tokio::spawn(route_replies(replies, Arc::clone(&waiters)));
        Ok(Self {
            channel,
            waiters,
            router,
        })
    }

    fn start_call(
        &self,
        exchange: &str,
        routing_key: &str,
        properties: BasicProperties,
    ) -> (Call, oneshot::Receiver<Delivery>, Forget<'_>) {
        let (sender, receiver) = oneshot::channel();
        let call = lock(&self.waiters).start(Some(sender), exchange, routing_key, properties);
        // Forgets the request however the call ends, dropped included.
        let forget = Forget {
            waiters: &self.waiters,
            id: call.id.clone(),
        };
        (call, receiver, forget)
    }

    async fn finish_call(
        &self,
        (call, receiver, _forget): (Call, oneshot::Receiver<Delivery>, Forget<'_>),
        body: Bytes,
        timeout: Duration,
    ) -> Result<Delivery> {
        self.channel
            .publish(&call.publish, &call.properties, body)
            .await?;
        match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(self
                .channel
                .close_reason()
                .map_or_else(|| closed("the reply consumer ended"), Error::ChannelClosed)),
            Err(_) => Err(rpc::call_timed_out(timeout)),
        }
    }

    fn calls_in_flight(&self) -> usize {
        lock(&self.waiters).len()
    }
}

amqp_io_common::rpc_api! {
    asyncness = [async],
    awaiting = [.await],
    demo = "# async fn demo(client: amqp_io_tokio::rpc::RpcClient) -> amqp_io_tokio::Result<()> {",
    suffix = ".await",
}

fn closed(why: &str) -> Error {
    Error::ConnectionClosed(amqp_proto::ConnectionError::TransportClosed(why.into()))
}

/// Removes a call's waiter when the call ends, replied or not.
struct Forget<'a> {
    waiters: &'a Waiters,
    id: String,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(self.waiters).finish(&self.id);
    }
}

/// Hands each reply to the call waiting for its correlation id.
async fn route_replies(mut replies: Consumer, waiters: Waiters) {
    while let Some(Ok(reply)) = replies.recv().await {
        // Consumed without acknowledgement: only the message matters.
        let reply = reply.into_inner();
        let waiter = lock(&waiters).waiter(&reply).and_then(Option::take);
        if let Some(waiter) = waiter {
            let _ = waiter.send(reply);
        }
    }
    // The consumer ended: calls still waiting fail.
    lock(&waiters).clear();
}

/// Serves requests from `queue` on `channel`: `handler` computes each
/// reply's properties and body; the reply goes to the request's
/// `reply_to` with its `correlation_id`, then the request is acknowledged.
/// Runs until the channel or connection closes.
///
/// ```no_run
/// use amqp_proto::codec::BasicProperties;
/// # async fn demo(connection: amqp_io_tokio::Connection) -> amqp_io_tokio::Result<()> {
/// let channel = connection.channel().await?;
/// amqp_io_tokio::rpc::serve(&channel, "rpc.square", |request| {
///     let number: u64 = std::str::from_utf8(request.body()).ok().and_then(|t| t.parse().ok()).unwrap_or(0);
///     (BasicProperties::default(), (number * number).to_string().into())
/// })
/// .await?;
/// # Ok(()) }
/// ```
pub async fn serve(
    channel: &Channel,
    queue: &str,
    mut handler: impl FnMut(&Delivery) -> (BasicProperties, Bytes),
) -> Result<()> {
    let mut requests = channel.basic_consume(rpc::request_consume(queue)).await?;
    while let Some(request) = requests.recv().await {
        let request = request?;
        let (properties, body) = handler(&request);
        if let Some((publish, properties)) = rpc::reply_to(&request, properties) {
            channel.publish(&publish, &properties, body).await?;
        }
        request.ack()?;
    }
    Ok(())
}
