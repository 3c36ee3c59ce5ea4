//! Naming a channel: one opening of it exactly, or whatever is open on an
//! id now.

/// One opening of a channel: its id and an epoch that no other opening on
/// this connection (or on the connections that recover it) shares.
///
/// Channel ids are reused: once a channel closes, the next
/// [`Connection::open_channel`](crate::Connection::open_channel) may hand
/// out the same id. A handle kept from the old opening then names nothing:
/// [`Connection::channel`](crate::Connection::channel) answers
/// [`UsageError::ChannelNotOpen`](crate::UsageError::ChannelNotOpen)
/// instead of sending on the new channel (an acknowledgement of an old
/// delivery tag would otherwise settle a different message). A channel
/// reopened by automatic recovery keeps its epoch, so handles taken before
/// a failure stay valid.
///
/// ```
/// use amqp_proto::spec::constants::ReplyCode;
/// use amqp_proto::{ChannelHandle, Connection};
///
/// # fn demo(connection: &mut Connection) -> Result<(), amqp_proto::UsageError> {
/// let first: ChannelHandle = connection.open_channel()?;
/// connection.channel(first)?.close(ReplyCode::REPLY_SUCCESS, "done")?;
/// // ... once the close completes, the id may be handed out again:
/// let second = connection.open_channel()?;
/// assert_ne!(first, second);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelHandle {
    id: u16,
    epoch: u64,
}

impl ChannelHandle {
    /// The handle of opening `epoch` of channel `id`. Connections make
    /// these; building one by hand is for tests and for code that stores
    /// handles, since only the connection knows which epoch is current.
    #[must_use]
    pub fn new(id: u16, epoch: u64) -> Self {
        Self { id, epoch }
    }

    /// The channel id on the wire (what [`Event`](crate::Event)s carry).
    #[must_use]
    pub fn id(self) -> u16 {
        self.id
    }

    /// Which opening of the id this is; unique per connection lineage.
    #[must_use]
    pub fn epoch(self) -> u64 {
        self.epoch
    }
}

impl std::fmt::Display for ChannelHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.id)
    }
}

/// What names a channel in [`Connection::channel`](crate::Connection::channel)
/// and the channel queries: a [`ChannelHandle`] names one opening exactly;
/// a bare `u16` id (as [`Event`](crate::Event)s carry it) names whatever is
/// open on that id now. The events of a channel always come before the
/// [`Event::ChannelClosed`](crate::Event::ChannelClosed) that frees its id,
/// so an adapter that acts on events in order may use the id.
pub trait ChannelKey: Copy + sealed::Key {}

impl ChannelKey for u16 {}
impl ChannelKey for ChannelHandle {}

pub(crate) mod sealed {
    /// How a key picks a channel; private, so the set of keys stays closed.
    pub trait Key {
        /// The channel id.
        fn id(self) -> u16;
        /// True if the channel of `epoch` on the key's id is the one named.
        fn names(self, epoch: u64) -> bool;
    }

    impl Key for u16 {
        fn id(self) -> u16 {
            self
        }

        fn names(self, _epoch: u64) -> bool {
            true
        }
    }

    impl Key for super::ChannelHandle {
        fn id(self) -> u16 {
            self.id
        }

        fn names(self, epoch: u64) -> bool {
            self.epoch == epoch
        }
    }
}
