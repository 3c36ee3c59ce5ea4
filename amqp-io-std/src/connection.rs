//! Opening, driving and closing a connection.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use amqp_proto::spec::constants::ReplyCode;
use amqp_proto::ConnectionError;

use crate::channel::Channel;
use crate::shared::{Inner, Shared};
use amqp_io_common::failover::AddressAttempts;
use amqp_io_common::recovery::jitter_seed;
use amqp_io_common::{Address, ConnectOptions, Error, Result};

/// How long dropping a connection may spend writing its `connection.close`.
const DROP_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// A blocking AMQP 0-9-1 connection.
///
/// Calls block the calling thread until their reply arrives, with a
/// timeout. Work arrives only while some thread is inside a call: as in
/// kombu, a program that consumes calls [`drain_events`](Self::drain_events)
/// (or a [`Consumer`](crate::Consumer)'s `recv`) in its loop, which also
/// sends and checks heartbeats. A program that may spend longer than a
/// heartbeat interval outside any call starts the
/// [heartbeat keeper](Self::spawn_heartbeat_keeper). Automatic recovery
/// (see [`on_recovery`](Self::on_recovery)) likewise runs on whichever
/// thread pumps the connection: a call waiting for its reply, a consumer's
/// `recv_timeout`, `drain_events`, or the heartbeat keeper.
///
/// `Connection` and [`Channel`] are `Send + Sync`: threads may share them.
/// Dropping the `Connection` closes it without waiting for the server;
/// [`close`](Self::close) waits for the server's confirmation.
///
/// ```no_run
/// use amqp_io_std::Connection;
/// use amqp_proto::codec::BasicProperties;
/// use amqp_proto::spec::{BasicPublish, QueueDeclare};
///
/// let connection = Connection::open("amqp://guest:guest@127.0.0.1:5672/%2f")?;
/// let channel = connection.channel()?;
/// let queue = channel
///     .queue_declare(QueueDeclare { exclusive: true, ..Default::default() })?
///     .queue;
/// channel.confirm_select()?;
/// let publish = BasicPublish { routing_key: queue.clone(), ..Default::default() };
/// channel
///     .publish(&publish, &BasicProperties::default(), "hello")?
///     .wait(std::time::Duration::from_secs(5))?;
/// connection.close()?;
/// # Ok::<(), amqp_io_std::Error>(())
/// ```
pub struct Connection {
    shared: Arc<Shared>,
    operation_timeout: Duration,
    keeper: Mutex<Option<Keeper>>,
}

/// The heartbeat keeper thread and the flag that stops it.
struct Keeper {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: JoinHandle<()>,
}

impl Connection {
    /// Connects to the broker a URL names and completes the handshake.
    ///
    /// ```no_run
    /// let connection = amqp_io_std::Connection::open("amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=30")?;
    /// # Ok::<(), amqp_io_std::Error>(())
    /// ```
    pub fn open(url: &str) -> Result<Self> {
        Self::open_with(ConnectOptions::from_url(url)?)
    }

    /// Connects with explicit options and completes the handshake.
    ///
    /// A refused login is [`ConnectionError::AuthenticationFailed`], a
    /// refused virtual host [`ConnectionError::AccessRefused`], both inside
    /// [`Error::ConnectionClosed`].
    ///
    /// ```no_run
    /// use amqp_io_std::{ConnectOptions, Connection, SaslMechanism};
    ///
    /// let mut options = ConnectOptions::from_url("amqp://broker.internal")?;
    /// options.config.mechanism = SaslMechanism::Plain { username: "app".into(), password: "secret".into() };
    /// options.config.connection_name = Some("billing-worker".into());
    /// let connection = Connection::open_with(options)?;
    /// # Ok::<(), amqp_io_std::Error>(())
    /// ```
    ///
    /// With several [`addresses`](ConnectOptions::addresses) (a cluster),
    /// each is tried in turn until one completes the handshake; when none
    /// does, [`Error::NoAddressConnected`] says why each failed.
    ///
    /// ```no_run
    /// use amqp_io_std::{ConnectOptions, Connection};
    ///
    /// let mut options = ConnectOptions::from_urls([
    ///     "amqp://guest:guest@127.0.0.1:5681/%2f",
    ///     "amqp://127.0.0.1:5682",
    ///     "amqp://127.0.0.1:5683",
    /// ])?;
    /// options.recovery = Some(Default::default()); // and fail over when the node dies
    /// let connection = Connection::open_with(options)?;
    /// # Ok::<(), amqp_io_std::Error>(())
    /// ```
    // By value like `amqp_io_tokio::Connection::connect_with`: each
    // address's attempt gets a copy it keeps for recovery.
    #[allow(clippy::needless_pass_by_value)]
    pub fn open_with(options: ConnectOptions) -> Result<Self> {
        let mut attempts = AddressAttempts::opening(&options, jitter_seed());
        while let Some((index, address)) = attempts.next() {
            match Self::open_on(options.clone(), index, address) {
                Ok(connection) => return Ok(connection),
                Err(error) => attempts.failed(address, error),
            }
        }
        Err(attempts.into_error())
    }

    /// Connects to address `index` of `options` and completes the
    /// handshake.
    fn open_on(options: ConnectOptions, index: usize, address: &Address) -> Result<Self> {
        let transport = crate::recovery::open_transport(&options, address)?;
        let operation_timeout = options.operation_timeout;
        #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
        let mut inner = Inner::new(options, index, transport.writer);
        #[cfg(feature = "tls")]
        if let Some(session) = transport.tls {
            inner.set_tls(session);
        }
        let shared = Arc::new(Shared::new(inner, transport.reader));
        // The core's handshake deadline bounds this wait.
        shared.wait("connection handshake", None, |inner| {
            inner.opened().is_some().then_some(Ok(()))
        })?;
        {
            let inner = shared.lock();
            // A broker that stops reading (a resource alarm it did not
            // announce) must not block a writer forever.
            let write_timeout = inner.write_timeout();
            inner.set_write_timeout(write_timeout).map_err(|error| {
                Error::ConnectionClosed(ConnectionError::TransportClosed(error.to_string()))
            })?;
        }
        Ok(Self {
            shared,
            operation_timeout,
            keeper: Mutex::new(None),
        })
    }

    /// Opens a channel.
    ///
    /// ```no_run
    /// # let connection = amqp_io_std::Connection::open("amqp://localhost")?;
    /// let channel = connection.channel()?;
    /// channel.basic_qos(amqp_proto::spec::BasicQos { prefetch_count: 10, ..Default::default() })?;
    /// # Ok::<(), amqp_io_std::Error>(())
    /// ```
    pub fn channel(&self) -> Result<Channel> {
        let channel = {
            let mut inner = self.shared.lock();
            let opened = inner.open_channel()?;
            inner.flush();
            opened
        };
        let timeout = self.operation_timeout;
        self.shared
            .lock()
            .set_open_timeout(channel, timeout, Instant::now());
        self.shared.wait("channel.open", None, |inner| {
            inner.poll_open(channel, || ()).map(|opened| {
                opened.map_err(|failure| {
                    Error::from_request_failure(failure, "channel.open", timeout)
                })
            })
        })?;
        Ok(Channel::new(Arc::clone(&self.shared), channel, timeout))
    }

    /// Waits for deliveries to callback consumers and returned messages of
    /// channels with a return handler, and calls their callbacks (without
    /// holding any lock: callbacks may ack, publish, or open channels).
    /// Returns how many callbacks ran once at least one did, or
    /// [`Error::Timeout`] if none did within `timeout`: the loop of a
    /// kombu consumer.
    ///
    /// Also sends heartbeats and notices a dead server meanwhile.
    ///
    /// ```no_run
    /// # let connection = amqp_io_std::Connection::open("amqp://localhost")?;
    /// use std::time::Duration;
    /// use amqp_io_std::Error;
    ///
    /// loop {
    ///     match connection.drain_events(Duration::from_secs(1)) {
    ///         Ok(_) => {}                         // callbacks ran
    ///         Err(Error::Timeout { .. }) => {}    // quiet second: do other work
    ///         Err(error) => return Err(error),    // the connection is gone
    ///     }
    /// }
    /// # Ok::<(), amqp_io_std::Error>(())
    /// ```
    pub fn drain_events(&self, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut work = {
                let mut inner = self.shared.lock();
                inner.take_callback_work(true)
            };
            let count = work.run();
            self.shared.lock().restore_callbacks(work);
            if count > 0 {
                return Ok(count);
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            self.shared.wait("drain_events", Some(remaining), |inner| {
                inner.has_callback_work(true).then_some(Ok(()))
            })?;
        }
    }

    /// This side's socket address (to find the connection in the broker's
    /// listings, for example).
    ///
    /// `None` when the socket has no address any more (it was shut down).
    /// The same type as `amqp_io_tokio::Connection::local_addr`.
    ///
    /// ```no_run
    /// # let connection = amqp_io_std::Connection::open("amqp://localhost")?;
    /// println!("connected from {:?}", connection.local_addr());
    /// # Ok::<(), amqp_io_std::Error>(())
    /// ```
    #[must_use]
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.shared.lock().local_addr().ok()
    }

    /// Calls `handler` when the broker blocks publishing on this connection
    /// (with its reason: a memory or disk alarm) and when it lifts the
    /// block (`None`), from [`drain_events`](Self::drain_events).
    ///
    /// ```no_run
    /// # let connection = amqp_io_std::Connection::open("amqp://localhost")?;
    /// connection.on_blocked(|reason| match reason {
    ///     Some(reason) => eprintln!("publishing paused by the broker: {reason}"),
    ///     None => eprintln!("publishing resumed"),
    /// });
    /// # Ok::<(), amqp_io_std::Error>(())
    /// ```
    pub fn on_blocked(&self, handler: impl FnMut(Option<&str>) + Send + 'static) {
        self.shared.lock().blocked_handler = Some(Box::new(handler));
    }

    /// Replaces the secret (an expiring OAuth 2 token) without
    /// reconnecting (RabbitMQ's `connection.update-secret`).
    ///
    /// ```no_run
    /// # let connection = amqp_io_std::Connection::open("amqp://localhost")?;
    /// let fresh_token = b"eyJhbGciOi...";
    /// connection.update_secret(fresh_token, "token refreshed")?;
    /// # Ok::<(), amqp_io_std::Error>(())
    /// ```
    pub fn update_secret(&self, new_secret: &[u8], reason: &str) -> Result<()> {
        let request = {
            let mut inner = self.shared.lock();
            let request = inner.update_secret(new_secret.to_vec(), reason)?;
            inner.flush();
            request
        };
        let (operation, timeout) = ("connection.update-secret", self.operation_timeout);
        self.shared
            .lock()
            .set_timeout(request, timeout, Instant::now());
        self.shared.wait(operation, None, |inner| {
            inner.poll_reply(request, || ()).map(|reply| {
                reply
                    .map(drop)
                    .map_err(|failure| Error::from_request_failure(failure, operation, timeout))
            })
        })
    }

    /// Starts a thread that sends heartbeats, and reads what arrives, when
    /// no other thread is in a call: for applications that spend longer
    /// than a heartbeat interval between calls. It stops when the
    /// connection is closed or dropped. Calling it again does nothing.
    ///
    /// ```no_run
    /// # let connection = amqp_io_std::Connection::open("amqp://localhost")?;
    /// connection.spawn_heartbeat_keeper();
    /// // Long work without calling into the connection: heartbeats continue.
    /// std::thread::sleep(std::time::Duration::from_secs(300));
    /// # Ok::<(), amqp_io_std::Error>(())
    /// ```
    pub fn spawn_heartbeat_keeper(&self) {
        let mut keeper = self.keeper.lock().unwrap_or_else(PoisonError::into_inner);
        if keeper.is_some() {
            return;
        }
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let shared = Arc::downgrade(&self.shared);
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("amqp-heartbeat".into())
            .spawn(move || keep_heartbeats(&shared, &thread_stop));
        if let Ok(thread) = thread {
            *keeper = Some(Keeper { stop, thread });
        }
    }

    fn begin_close(&self, start: impl FnOnce(&mut Inner, Instant) -> Result<bool>) -> Result<bool> {
        let handshake = {
            let mut inner = self.shared.lock();
            let handshake = start(&mut inner, Instant::now())?;
            inner.flush();
            inner.dispatch();
            handshake
        };
        self.shared.notify();
        Ok(handshake)
    }

    fn finish_close(&self, handshake: bool) -> Result<()> {
        // The core's close (and drain) deadlines bound this wait.
        self.shared.wait("connection.close", None, |inner| {
            inner.close_outcome(handshake)
        })
    }

    fn state(&self) -> MutexGuard<'_, Inner> {
        self.shared.lock()
    }
}

amqp_io_common::connection_api! {
    type = Connection,
    krate = amqp_io_std,
    asyncness = [],
    awaiting = [],
    demo = "# fn demo(connection: &amqp_io_std::Connection) -> amqp_io_std::Result<()> {",
    suffix = "",
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(keeper) = self
            .keeper
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let (flag, wake) = &*keeper.stop;
            *flag.lock().unwrap_or_else(PoisonError::into_inner) = true;
            wake.notify_all();
            let connecting = {
                let mut inner = self.shared.lock();
                let connecting = inner.is_connecting();
                inner.shut_down();
                connecting
            };
            // The keeper otherwise only waits on the flag or on a bounded
            // read; a recovery's connect may take the connect timeout, so
            // then it is left to finish alone (it gives up, seeing the
            // shutdown) rather than holding up the drop.
            if !connecting {
                let _ = keeper.thread.join();
            }
        }
        let mut inner = self.shared.lock();
        inner.shut_down();
        if inner.closed().is_none() {
            // Best effort, without waiting for the server: a close it
            // misses ends the same way when the socket closes.
            let _ = inner.set_write_timeout(DROP_WRITE_TIMEOUT);
            let _ = inner.core.close(
                ReplyCode::REPLY_SUCCESS,
                "connection dropped",
                Instant::now(),
            );
            inner.flush();
            inner
                .core
                .handle_transport_closed("the connection was dropped");
            inner.flush();
            inner.dispatch();
        }
        drop(inner);
        self.shared.notify();
    }
}

/// The heartbeat keeper's loop: service the connection at each deadline
/// the core names (at least every second) until told to stop.
fn keep_heartbeats(shared: &Weak<Shared>, stop: &(Mutex<bool>, Condvar)) {
    const LONGEST_SLEEP: Duration = Duration::from_secs(1);
    const SHORTEST_SLEEP: Duration = Duration::from_millis(10);
    loop {
        let Some(connection) = shared.upgrade() else {
            return;
        };
        if !connection.service() {
            return;
        }
        let sleep = connection
            .next_deadline()
            .map_or(LONGEST_SLEEP, |deadline| {
                deadline.saturating_duration_since(Instant::now())
            })
            .clamp(SHORTEST_SLEEP, LONGEST_SLEEP);
        drop(connection);
        let (flag, wake) = stop;
        let stopped = flag.lock().unwrap_or_else(PoisonError::into_inner);
        if *stopped {
            return;
        }
        let (stopped, _) = wake
            .wait_timeout(stopped, sleep)
            .unwrap_or_else(PoisonError::into_inner);
        if *stopped {
            return;
        }
    }
}
