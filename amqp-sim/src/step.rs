//! The vocabulary of a simulation: one [`Step`] is an application command,
//! a network or clock event, or a fault. A run is a `Vec<Step>`, so a
//! failing run can be shrunk by deleting steps.
//!
//! Steps name things by small indices (`ch`, `queue`, `delivery`, ...) that
//! are resolved against what exists when the step runs (modulo the number
//! of candidates), so every step stays meaningful after others are removed.
//! `Debug` prints a step as valid Rust, which is how shrunk traces become
//! regression tests.

/// One step of a simulation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The application opens a channel.
    Open,
    /// The application closes one of its channels.
    Close {
        /// Which channel (index into the open ones).
        ch: u8,
    },
    /// `queue.declare`: index 4 (mod 5) asks for a server-named queue.
    DeclareQueue {
        /// Channel index.
        ch: u8,
        /// `q0`..`q3`, or 4 for a server-named queue.
        queue: u8,
        /// Passive: only check that it exists (a missing queue closes the channel).
        passive: bool,
    },
    /// `queue.delete` of a known queue.
    DeleteQueue {
        /// Channel index.
        ch: u8,
        /// Index into the known queue names.
        queue: u8,
    },
    /// `queue.purge` of a known queue.
    PurgeQueue {
        /// Channel index.
        ch: u8,
        /// Index into the known queue names.
        queue: u8,
    },
    /// `queue.bind`.
    BindQueue {
        /// Channel index.
        ch: u8,
        /// Index into the known queue names.
        queue: u8,
        /// Index into the exchanges (never the default one).
        exchange: u8,
        /// Index into the routing keys.
        key: u8,
    },
    /// `queue.unbind`.
    UnbindQueue {
        /// Channel index.
        ch: u8,
        /// Index into the known queue names.
        queue: u8,
        /// Index into the exchanges (never the default one).
        exchange: u8,
        /// Index into the routing keys.
        key: u8,
    },
    /// `exchange.declare` of `x0`..`x3` with a type chosen by `kind`.
    DeclareExchange {
        /// Channel index.
        ch: u8,
        /// Which of `x0`..`x3`.
        exchange: u8,
        /// direct, fanout or topic.
        kind: u8,
    },
    /// `exchange.delete` of `x0`..`x3`.
    DeleteExchange {
        /// Channel index.
        ch: u8,
        /// Which of `x0`..`x3`.
        exchange: u8,
    },
    /// `basic.qos` with this prefetch count.
    Qos {
        /// Channel index.
        ch: u8,
        /// Prefetch count (0: unlimited).
        prefetch: u8,
    },
    /// `basic.consume`: tag 0 lets the server name the consumer.
    Consume {
        /// Channel index.
        ch: u8,
        /// Index into the known queue names.
        queue: u8,
        /// 0 for a server-generated tag, else the tag `c<tag>`.
        tag: u8,
        /// Deliveries need no acknowledgement.
        no_ack: bool,
    },
    /// `basic.cancel` of a known consumer.
    Cancel {
        /// Index into the known consumers.
        consumer: u8,
    },
    /// `confirm.select`.
    SelectConfirms {
        /// Channel index.
        ch: u8,
    },
    /// `basic.publish`.
    Publish {
        /// Channel index.
        ch: u8,
        /// Index into the exchanges (0 is the default exchange).
        exchange: u8,
        /// Index into the routing keys (queue names for the default exchange).
        key: u8,
        /// Ask for a `basic.return` if unroutable.
        mandatory: bool,
        /// Body size in bytes.
        size: u32,
        /// Nesting depth of a `headers` property table (0: none).
        depth: u8,
    },
    /// `basic.get`.
    Get {
        /// Channel index.
        ch: u8,
        /// Index into the known queue names.
        queue: u8,
        /// The message needs no acknowledgement.
        no_ack: bool,
    },
    /// `basic.ack` of a delivery the application holds.
    Ack {
        /// Index into the unacknowledged deliveries.
        delivery: u8,
        /// Acknowledge every earlier one on the channel too.
        multiple: bool,
    },
    /// `basic.nack` of a delivery the application holds.
    Nack {
        /// Index into the unacknowledged deliveries.
        delivery: u8,
        /// Every earlier one too.
        multiple: bool,
        /// Put it back in the queue.
        requeue: bool,
    },
    /// `basic.reject` of a delivery the application holds.
    Reject {
        /// Index into the unacknowledged deliveries.
        delivery: u8,
        /// Put it back in the queue.
        requeue: bool,
    },
    /// `connection.update-secret`.
    UpdateSecret,
    /// The application stops waiting for one of its outstanding requests
    /// (`Connection::abandon_request`), as a dropped future does.
    Abandon {
        /// Index into the requests awaiting their outcome, oldest first.
        request: u8,
    },
    /// The application sets a deadline `ms` from now on one of its
    /// outstanding requests (`Connection::set_request_deadline`).
    Deadline {
        /// Index into the requests awaiting their outcome, oldest first.
        request: u8,
        /// Milliseconds from now (0: due at once, fired by the next timeout).
        ms: u32,
    },
    /// The application closes the connection (code 200).
    CloseConnection,
    /// The network delivers a prefix of what the broker wrote:
    /// `permille`/1000 of it, at least one byte.
    Deliver {
        /// Share of the pending bytes, in thousandths.
        permille: u16,
    },
    /// The network delivers everything the broker wrote.
    DeliverAll,
    /// Simulated time passes; client and broker timers fire on the way.
    Advance {
        /// Milliseconds.
        ms: u32,
    },
    /// The transport fails: both sides lose what was in flight.
    Cut,
    /// The broker stops reading and writing for good (a hung server).
    Stall,
    /// The broker closes one of its channels (406, as for an inequivalent
    /// declaration).
    ServerCloseChannel {
        /// Index into the broker's open channels.
        ch: u8,
    },
    /// The broker closes the connection (320 connection-forced).
    ServerCloseConnection,
    /// The broker cancels a consumer (consumer-cancel-notify).
    ServerCancel {
        /// Index into the broker's active consumers.
        consumer: u8,
    },
    /// The broker sends `channel.flow`.
    Flow {
        /// Index into the broker's open channels.
        ch: u8,
        /// Resume (true) or pause.
        active: bool,
    },
    /// The broker sends `connection.blocked` or `unblocked`.
    Blocked {
        /// Blocked (true) or unblocked.
        on: bool,
    },
    /// The broker writes malformed input (see [`Malformed`]).
    Inject(Malformed),
}

/// Input that breaks the protocol, each with the reaction the
/// specification (or, where silent, the core's documented choice)
/// prescribes; see [`Malformed::expected`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// A frame whose end octet is not 0xCE: drop the connection silently
    /// (spec 4.2.3).
    BadFrameEnd,
    /// A frame header announcing more than frame-max: 501 frame-error.
    Oversize,
    /// Frame type 9: 501 frame-error.
    UnknownFrameType,
    /// A heartbeat on a channel other than 0: 501 frame-error.
    HeartbeatOnChannel,
    /// A method frame naming no known method: 540 not-implemented.
    UnknownMethod,
    /// A method on a channel that is not open: 504 channel-error.
    ChannelNotOpen,
    /// A content body frame with no header before it: 505 unexpected-frame.
    BodyWithoutHeader {
        /// Index into the broker's open channels.
        ch: u8,
    },
    /// A method frame between the next content-carrying method (deliver,
    /// get-ok, return) and its content header: 505 unexpected-frame
    /// (spec 4.2.6).
    MethodBeforeHeader,
    /// A method only clients send (`basic.qos`): 503 command-invalid.
    ClientOnlyMethod {
        /// Index into the broker's open channels.
        ch: u8,
    },
    /// A publisher `basic.ack` for a tag never published: the core treats
    /// it as 503 command-invalid (`Channel::settle`).
    UnknownConfirm {
        /// Index into the broker's open channels.
        ch: u8,
    },
    /// The server answers the protocol header with its own,
    /// `AMQP\x01\x01\x00\x0a`, and hangs up (spec 4.2.2): the client
    /// closes without writing anything. Not a step: the broker chooses it
    /// from its seed.
    RejectedHeader,
}

/// How the client must react to malformed input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// Send `connection.close` with this reply code.
    Close(u16),
    /// Close without sending anything more.
    Silent,
}

impl Malformed {
    /// The reaction the client owes this input.
    #[must_use]
    pub fn expected(self) -> Reaction {
        match self {
            Self::BadFrameEnd | Self::RejectedHeader => Reaction::Silent,
            Self::Oversize | Self::UnknownFrameType | Self::HeartbeatOnChannel => {
                Reaction::Close(501)
            }
            Self::UnknownMethod => Reaction::Close(540),
            Self::ChannelNotOpen => Reaction::Close(504),
            Self::BodyWithoutHeader { .. } | Self::MethodBeforeHeader => Reaction::Close(505),
            Self::ClientOnlyMethod { .. } | Self::UnknownConfirm { .. } => Reaction::Close(503),
        }
    }

    /// True when the reaction is owed only on an open connection (the
    /// rest concern the handshake).
    #[must_use]
    pub fn needs_open(self) -> bool {
        self != Self::RejectedHeader
    }

    /// True when the fault concerns one channel, which must be usable on
    /// the client's side when the bytes arrive for the reaction to be owed
    /// (a channel the client is closing discards what it receives).
    #[must_use]
    pub fn channel_bound(self) -> bool {
        matches!(
            self,
            Self::BodyWithoutHeader { .. }
                | Self::MethodBeforeHeader
                | Self::ClientOnlyMethod { .. }
                | Self::UnknownConfirm { .. }
        )
    }
}
