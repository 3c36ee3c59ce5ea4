//! Connecting, and the connection handle.

use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use amqp_io_common::failover::AddressAttempts;
use amqp_io_common::recovery::jitter_seed;
use amqp_io_common::{Address, ConnectOptions, Error, Result};
use amqp_proto::spec::constants::ReplyCode;
use amqp_proto::ConnectionError;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::channel::Channel;
use crate::driver::{self, ReadHalf, WriteHalf};
use crate::state::{Shared, State};

/// What every handle of one connection holds. When the last handle goes,
/// the connection is closed (by the driver task, so dropping never blocks).
pub(crate) struct Handle {
    pub(crate) shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.shut_down();
        if state.closed().is_none() {
            // Mid-handshake this simply ends the connection.
            let _ = state.core.close(
                ReplyCode::REPLY_SUCCESS,
                "every handle was dropped",
                Instant::now(),
            );
        }
        drop(state);
        self.shared.wake_driver.notify_one();
    }
}

/// An AMQP 0-9-1 connection driven by a tokio task.
///
/// `Connection` and [`Channel`] are cheap to clone and `Send + Sync`; many
/// tasks may use them at once. A driver task spawned on connect owns the
/// socket: it writes batched frames, reads in large chunks, sends and
/// checks heartbeats whatever the application does, and resolves every
/// outstanding call when the connection ends. When the last handle
/// (connection, channel, consumer or delivery) is dropped, the driver
/// closes the connection in the background.
///
/// ```no_run
/// use std::time::Duration;
/// use amqp_io_tokio::Connection;
/// use amqp_proto::codec::BasicProperties;
/// use amqp_proto::spec::{BasicPublish, QueueDeclare};
///
/// # async fn demo() -> amqp_io_tokio::Result<()> {
/// let connection = Connection::connect("amqp://guest:guest@127.0.0.1:5672/%2f").await?;
/// let channel = connection.channel().await?;
/// let queue = channel
///     .queue_declare(QueueDeclare { exclusive: true, ..Default::default() })
///     .await?
///     .queue;
/// channel.confirm_select().await?;
/// let publish = BasicPublish { routing_key: queue, ..Default::default() };
/// channel
///     .publish(&publish, &BasicProperties::default(), "hello")
///     .await?
///     .await?;
/// connection.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Connection {
    handle: Arc<Handle>,
    operation_timeout: Duration,
}

impl Connection {
    /// Connects to the broker a URL names and completes the handshake.
    ///
    /// ```no_run
    /// # async fn demo() -> amqp_io_tokio::Result<()> {
    /// let connection = amqp_io_tokio::Connection::connect("amqp://localhost/%2f?heartbeat=10").await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(ConnectOptions::from_url(url)?).await
    }

    /// Connects with explicit options and completes the handshake. A
    /// refused login is [`ConnectionError::AuthenticationFailed`], a
    /// refused virtual host [`ConnectionError::AccessRefused`].
    ///
    /// Cancellation: dropping the future closes the socket; nothing
    /// outlives it.
    ///
    /// ```no_run
    /// use amqp_io_tokio::{ConnectOptions, Connection};
    ///
    /// # async fn demo() -> amqp_io_tokio::Result<()> {
    /// let mut options = ConnectOptions::from_url("amqp://broker.internal")?;
    /// options.config.connection_name = Some("order-service".into());
    /// let connection = Connection::connect_with(options).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// With several [`addresses`](ConnectOptions::addresses) (a cluster),
    /// each is tried in turn until one completes the handshake; when none
    /// does, [`Error::NoAddressConnected`] says why each failed.
    ///
    /// ```no_run
    /// use amqp_io_tokio::{ConnectOptions, Connection};
    ///
    /// # async fn demo() -> amqp_io_tokio::Result<()> {
    /// let mut options = ConnectOptions::from_urls([
    ///     "amqp://guest:guest@127.0.0.1:5681/%2f",
    ///     "amqp://127.0.0.1:5682",
    ///     "amqp://127.0.0.1:5683",
    /// ])?;
    /// options.recovery = Some(Default::default()); // and fail over when the node dies
    /// let connection = Connection::connect_with(options).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_with(options: ConnectOptions) -> Result<Self> {
        let mut attempts = AddressAttempts::opening(&options, jitter_seed());
        while let Some((index, address)) = attempts.next() {
            match Self::connect_on(options.clone(), index, address).await {
                Ok(connection) => return Ok(connection),
                Err(error) => attempts.failed(address, error),
            }
        }
        Err(attempts.into_error())
    }

    /// Connects to address `index` of `options` and completes the
    /// handshake.
    async fn connect_on(options: ConnectOptions, index: usize, address: &Address) -> Result<Self> {
        let (reader, writer, local_addr) = connect_transport(&options, address).await?;
        let operation_timeout = options.operation_timeout;
        let mut state = State::new(options, index);
        state.local_addr = Some(local_addr);
        let shared = Arc::new(Shared::new(state));
        let mut driver = tokio::spawn(driver::drive(Arc::clone(&shared), reader, writer));
        let handle = Arc::new(Handle {
            shared: Arc::clone(&shared),
        });
        // The core's handshake deadline bounds this wait.
        let opened = std::future::poll_fn(|context| {
            let mut state = shared.lock();
            if state.opened().is_some() {
                return std::task::Poll::Ready(Ok(()));
            }
            if let Some(error) = state.closed() {
                return std::task::Poll::Ready(Err(Error::ConnectionClosed(error.clone())));
            }
            state.wait_open(context.waker().clone());
            std::task::Poll::Pending
        });
        tokio::select! {
            biased;
            opened = opened => opened?,
            _ = &mut driver => {
                // The driver ends once the connection has: say why.
                let error = shared.lock().closed().cloned().unwrap_or_else(|| {
                    ConnectionError::TransportClosed("the connection driver stopped".into())
                });
                return Err(Error::ConnectionClosed(error));
            }
        }
        Ok(Self {
            handle,
            operation_timeout,
        })
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// Opens a channel.
    ///
    /// Cancellation: if dropped before `channel.open-ok`, the channel is
    /// closed when the reply comes.
    ///
    /// ```no_run
    /// # async fn demo(connection: amqp_io_tokio::Connection) -> amqp_io_tokio::Result<()> {
    /// let channel = connection.channel().await?;
    /// channel.basic_qos(amqp_proto::spec::BasicQos { prefetch_count: 100, ..Default::default() }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn channel(&self) -> Result<Channel> {
        let timeout = self.operation_timeout;
        let channel = {
            let mut state = self.shared().lock();
            let channel = state.open_channel()?;
            state.set_open_timeout(channel, timeout, std::time::Instant::now());
            channel
        };
        self.shared().wake_driver.notify_one();
        let mut opening = OpenGuard {
            shared: self.shared(),
            channel,
            done: false,
        };
        let opened = std::future::poll_fn(|context| {
            let mut state = self.shared().lock();
            match state.poll_open(channel, || context.waker().clone()) {
                Some(result) => std::task::Poll::Ready(result.map_err(|failure| {
                    Error::from_request_failure(failure, "channel.open", timeout)
                })),
                None => match state.closed() {
                    Some(error) => {
                        std::task::Poll::Ready(Err(Error::ConnectionClosed(error.clone())))
                    }
                    None => std::task::Poll::Pending,
                },
            }
        });
        let opened = opened.await;
        opening.done = true;
        opened?;
        Ok(Channel::new(Arc::clone(&self.handle), channel, timeout))
    }

    /// Whether the broker blocks publishing, as a watchable value:
    /// `Some(reason)` while blocked, `None` otherwise; each change is seen
    /// by [`changed`](watch::Receiver::changed).
    ///
    /// ```no_run
    /// # async fn demo(connection: amqp_io_tokio::Connection) {
    /// let mut blocked = connection.watch_blocked();
    /// while blocked.changed().await.is_ok() {
    ///     match &*blocked.borrow() {
    ///         Some(reason) => eprintln!("publishing paused: {reason}"),
    ///         None => eprintln!("publishing resumed"),
    ///     }
    /// }
    /// # }
    /// ```
    #[must_use]
    pub fn watch_blocked(&self) -> watch::Receiver<Option<String>> {
        self.shared().lock().blocked.subscribe()
    }

    /// This side's socket address (to find the connection in the broker's
    /// listings, for example). The same type as
    /// `amqp_io_std::Connection::local_addr`.
    ///
    /// ```no_run
    /// # fn demo(connection: amqp_io_tokio::Connection) {
    /// println!("connected from {:?}", connection.local_addr());
    /// # }
    /// ```
    #[must_use]
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.shared().lock().local_addr
    }

    /// Waits until the connection ends, and says why.
    ///
    /// ```no_run
    /// # async fn demo(connection: amqp_io_tokio::Connection) {
    /// let reason = connection.closed().await;
    /// eprintln!("connection ended: {reason}");
    /// # }
    /// ```
    pub async fn closed(&self) -> ConnectionError {
        loop {
            let changed = self.shared().changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(error) = self.close_reason() {
                return error;
            }
            changed.await;
        }
    }

    fn begin_close(&self, start: impl FnOnce(&mut State, Instant) -> Result<bool>) -> Result<bool> {
        let handshake = start(&mut self.state(), Instant::now())?;
        self.shared().wake_driver.notify_one();
        Ok(handshake)
    }

    async fn finish_close(&self, handshake: bool) -> Result<()> {
        self.closed().await;
        self.state()
            .close_outcome(handshake)
            .unwrap_or(Err(Error::Usage(amqp_proto::UsageError::ConnectionClosed)))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared().lock()
    }
}

amqp_io_common::connection_api! {
    type = Connection,
    krate = amqp_io_tokio,
    asyncness = [async],
    awaiting = [.await],
    demo = "# async fn demo(connection: amqp_io_tokio::Connection) -> amqp_io_tokio::Result<()> {",
    suffix = ".await",
}

/// Abandons a channel open whose future was dropped: the channel is
/// closed.
struct OpenGuard<'a> {
    shared: &'a Arc<Shared>,
    channel: amqp_proto::ChannelHandle,
    done: bool,
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.shared.lock().abandon_open(self.channel);
            self.shared.wake_driver.notify_one();
        }
    }
}

/// A new socket: its halves and this side's address.
pub(crate) type Transport = (ReadHalf, WriteHalf, std::net::SocketAddr);

/// Connects to the first of `attempts` that accepts; its index too.
pub(crate) async fn connect_any(
    options: &ConnectOptions,
    mut attempts: AddressAttempts<'_>,
) -> Result<(usize, Transport)> {
    while let Some((index, address)) = attempts.next() {
        match connect_transport(options, address).await {
            Ok(transport) => return Ok((index, transport)),
            Err(error) => attempts.failed(address, error),
        }
    }
    Err(attempts.into_error())
}

/// Connects TCP (and TLS when asked) to `address` within the connect
/// timeout.
pub(crate) async fn connect_transport(
    options: &ConnectOptions,
    address: &Address,
) -> Result<Transport> {
    let name = address.to_string();
    let failed = |source| Error::Connect {
        address: name.clone(),
        source,
    };
    let connect = TcpStream::connect((address.host.as_str(), address.port));
    let socket = tokio::time::timeout(options.connection_timeout, connect)
        .await
        .map_err(|_| failed(std::io::ErrorKind::TimedOut.into()))?
        .map_err(failed)?;
    socket.set_nodelay(true).map_err(failed)?;
    let local_addr = socket.local_addr().map_err(failed)?;
    #[cfg(feature = "tls")]
    if let Some(settings) = &options.tls {
        let settings = settings.for_address(address);
        let name =
            tokio_rustls::rustls::pki_types::ServerName::try_from(settings.server_name.clone())
                .map_err(|error| Error::Tls(format!("invalid server name: {error}")))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&settings.config));
        let handshake = connector.connect(name, socket);
        let stream = tokio::time::timeout(options.connection_timeout, handshake)
            .await
            .map_err(|_| failed(std::io::ErrorKind::TimedOut.into()))?
            .map_err(|error| {
                Error::ConnectionClosed(ConnectionError::TransportClosed(format!("TLS: {error}")))
            })?;
        let (reader, writer) = tokio::io::split(stream);
        return Ok((Box::pin(reader), Box::pin(writer), local_addr));
    }
    let (reader, writer) = socket.into_split();
    Ok((Box::pin(reader), Box::pin(writer), local_addr))
}
