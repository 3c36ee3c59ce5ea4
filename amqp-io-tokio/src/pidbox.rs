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

amqp_io_common::pidbox_api! {
    krate = amqp_io_tokio,
    asyncness = [async],
    awaiting = [.await],
    demo = "# async fn demo(connection: amqp_io_tokio::Connection) -> amqp_io_tokio::Result<()> {",
    suffix = ".await",
}
