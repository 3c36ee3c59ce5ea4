//! Request/reply over RabbitMQ's direct reply-to for the blocking
//! adapter: an [`RpcClient`] (usable from several threads at once) and
//! [`serve`] for the other side. Conventions in [`amqp_io_common::rpc`].
//!
//! ```no_run
//! use std::time::Duration;
//! use amqp_io_std::rpc::RpcClient;
//! use amqp_proto::codec::BasicProperties;
//!
//! let connection = amqp_io_std::Connection::open("amqp://localhost")?;
//! let client = RpcClient::new(&connection)?;
//! let reply = client.call("", "rpc.square", BasicProperties::default(), "12", Duration::from_secs(5))?;
//! println!("{:?}", reply.body());
//! # Ok::<(), amqp_io_std::Error>(())
//! ```

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use amqp_io_common::rpc::{self, Call, Calls};
use amqp_io_common::{Error, Result};
use amqp_proto::codec::BasicProperties;
use amqp_proto::Delivery;
use bytes::Bytes;

use crate::{Channel, Connection, Consumer};

/// Sends requests and waits for their replies through direct reply-to.
///
/// Threads may call at once: whichever reads a reply files it under its
/// correlation id for the caller waiting on it. A reply whose call timed
/// out finds no entry and is discarded.
#[derive(Debug)]
pub struct RpcClient {
    channel: Channel,
    replies: Consumer,
    /// Calls in flight, each with a slot for its reply once it arrived.
    calls: Mutex<Calls<Option<Delivery>>>,
}

impl RpcClient {
    /// Opens a channel and consumes `amq.rabbitmq.reply-to` on it (before
    /// any request, as RabbitMQ requires).
    ///
    /// ```no_run
    /// # let connection = amqp_io_std::Connection::open("amqp://localhost")?;
    /// let client = amqp_io_std::rpc::RpcClient::new(&connection)?;
    /// # Ok::<(), amqp_io_std::Error>(())
    /// ```
    pub fn new(connection: &Connection) -> Result<Self> {
        let channel = connection.channel()?;
        let replies = channel.basic_consume(rpc::reply_consume())?;
        Ok(Self {
            channel,
            replies,
            calls: Mutex::default(),
        })
    }

    fn start_call(&self, exchange: &str, routing_key: &str, properties: BasicProperties) -> Call {
        self.lock().start(None, exchange, routing_key, properties)
    }

    // `rpc_api!` hands over what `start_call` returned; the async adapter
    // needs it by value.
    #[allow(clippy::needless_pass_by_value)]
    fn finish_call(&self, call: Call, body: Bytes, timeout: Duration) -> Result<Delivery> {
        let result = self.exchange(&call, body, timeout);
        self.lock().finish(&call.id);
        result
    }

    fn exchange(&self, call: &Call, body: Bytes, timeout: Duration) -> Result<Delivery> {
        self.channel
            .publish(&call.publish, &call.properties, body)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(reply) = self.lock().waiter_of(&call.id).and_then(Option::take) {
                return Ok(reply);
            }
            // Short slices, so a reply another thread filed for us is
            // seen soon.
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(rpc::call_timed_out(timeout));
            }
            match self
                .replies
                .recv_timeout(left.min(Duration::from_millis(50)))
            {
                Ok(reply) => {
                    let reply = reply.into_inner();
                    if let Some(slot) = self.lock().waiter(&reply) {
                        *slot = Some(reply);
                    }
                }
                Err(Error::Timeout { .. }) => {}
                Err(error) => return Err(error),
            }
        }
    }

    fn calls_in_flight(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, Calls<Option<Delivery>>> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

amqp_io_common::rpc_api! {
    asyncness = [],
    awaiting = [],
    demo = "# fn demo(client: &amqp_io_std::rpc::RpcClient) -> amqp_io_std::Result<()> {",
    suffix = "",
}

/// Serves up to `limit` requests (`None`: until the channel closes) from
/// `queue`: `handler` computes each reply, which goes to the request's
/// `reply_to` with its `correlation_id`; then the request is acknowledged.
/// Returns how many were served.
///
/// ```no_run
/// use amqp_proto::codec::BasicProperties;
/// # let connection = amqp_io_std::Connection::open("amqp://localhost")?;
/// let channel = connection.channel()?;
/// amqp_io_std::rpc::serve(&channel, "rpc.square", None, |request| {
///     let number: u64 = std::str::from_utf8(request.body()).ok().and_then(|t| t.parse().ok()).unwrap_or(0);
///     (BasicProperties::default(), (number * number).to_string().into())
/// })?;
/// # Ok::<(), amqp_io_std::Error>(())
/// ```
pub fn serve(
    channel: &Channel,
    queue: &str,
    limit: Option<usize>,
    mut handler: impl FnMut(&Delivery) -> (BasicProperties, Bytes),
) -> Result<usize> {
    let requests = channel.basic_consume(rpc::request_consume(queue))?;
    let mut served = 0;
    while limit.map_or(true, |limit| served < limit) {
        let request = match requests.recv() {
            Ok(request) => request,
            Err(Error::ConsumerCancelled(_) | Error::ConsumerCancelledByApplication(_)) => break,
            Err(error) => return Err(error),
        };
        let (properties, body) = handler(&request);
        if let Some((publish, properties)) = rpc::reply_to(&request, properties) {
            channel.publish(&publish, &properties, body)?;
        }
        request.ack()?;
        served += 1;
    }
    Ok(served)
}
