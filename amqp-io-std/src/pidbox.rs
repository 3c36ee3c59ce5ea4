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

amqp_io_common::pidbox_api! {
    krate = amqp_io_std,
    asyncness = [],
    awaiting = [],
    demo = "# fn demo(connection: &amqp_io_std::Connection) -> amqp_io_std::Result<()> {",
    suffix = "",
}
