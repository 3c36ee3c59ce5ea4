//! A delivery that acknowledges itself: the core's
//! [`amqp_proto::Delivery`] with the channel it arrived on.
//!
//! Both adapters hand consumers this type, as `amqp_io_std::Delivery` and
//! `amqp_io_tokio::Delivery`; only the channel type differs. A third
//! adapter gets the same surface by implementing [`Settle`] for its
//! channel handle.
//!
//! ```
//! use amqp_io_common::delivery::{Delivery, Settle};
//! use amqp_io_common::Result;
//! use amqp_proto::codec::{Content, ContentHeader};
//! use std::cell::RefCell;
//!
//! /// A channel that writes down what it was asked to send.
//! #[derive(Default)]
//! struct Recorder(RefCell<Vec<String>>);
//!
//! impl Settle for Recorder {
//!     fn ack(&self, delivery_tag: u64, multiple: bool) -> Result<()> {
//!         self.0.borrow_mut().push(format!("ack {delivery_tag} {multiple}"));
//!         Ok(())
//!     }
//!     fn nack(&self, delivery_tag: u64, multiple: bool, requeue: bool) -> Result<()> {
//!         self.0.borrow_mut().push(format!("nack {delivery_tag} {multiple} {requeue}"));
//!         Ok(())
//!     }
//!     fn reject(&self, delivery_tag: u64, requeue: bool) -> Result<()> {
//!         self.0.borrow_mut().push(format!("reject {delivery_tag} {requeue}"));
//!         Ok(())
//!     }
//! }
//!
//! let core = amqp_proto::Delivery {
//!     channel: 1,
//!     consumer_tag: "c".into(),
//!     delivery_tag: 7,
//!     redelivered: false,
//!     exchange: "".into(),
//!     routing_key: "jobs".into(),
//!     content: Content {
//!         header: Box::new(ContentHeader::basic(0, Default::default())),
//!         body: Default::default(),
//!     },
//! };
//! let delivery = Delivery::new(core, Recorder::default());
//! assert_eq!(delivery.delivery_tag, 7); // the core's fields, through Deref
//! delivery.ack()?;
//! delivery.nack(true)?;
//! assert_eq!(*delivery.channel().0.borrow(), ["ack 7 false", "nack 7 false true"]);
//! # Ok::<(), amqp_io_common::Error>(())
//! ```

use crate::Result;

/// What a channel handle must offer for a [`Delivery`] to settle itself:
/// `basic.ack`, `basic.nack` and `basic.reject` by delivery tag, sent
/// without waiting (none of them has a reply).
pub trait Settle {
    /// Acknowledges `delivery_tag` (and, with `multiple`, every earlier
    /// unacknowledged one on the channel).
    ///
    /// # Errors
    ///
    /// The channel's or connection's close, or a usage error.
    fn ack(&self, delivery_tag: u64, multiple: bool) -> Result<()>;

    /// Refuses `delivery_tag` (`basic.nack`), requeueing it or not.
    ///
    /// # Errors
    ///
    /// The channel's or connection's close, or a usage error.
    fn nack(&self, delivery_tag: u64, multiple: bool, requeue: bool) -> Result<()>;

    /// Refuses `delivery_tag` (`basic.reject`), requeueing it or not.
    ///
    /// # Errors
    ///
    /// The channel's or connection's close, or a usage error.
    fn reject(&self, delivery_tag: u64, requeue: bool) -> Result<()>;
}

/// A message delivered to a consumer, acknowledged through itself.
/// Dereferences to the core's [`amqp_proto::Delivery`] (body, properties,
/// tags, routing); `C` is the adapter's channel handle.
#[derive(Debug)]
pub struct Delivery<C> {
    delivery: amqp_proto::Delivery,
    channel: C,
}

impl<C> std::ops::Deref for Delivery<C> {
    type Target = amqp_proto::Delivery;

    fn deref(&self) -> &amqp_proto::Delivery {
        &self.delivery
    }
}

impl<C> Delivery<C> {
    /// The core's delivery with the channel it arrived on (for adapters).
    #[must_use]
    pub fn new(delivery: amqp_proto::Delivery, channel: C) -> Self {
        Self { delivery, channel }
    }

    /// The channel it arrived on.
    #[must_use]
    pub fn channel(&self) -> &C {
        &self.channel
    }

    /// The core's delivery, without the channel handle.
    #[must_use]
    pub fn into_inner(self) -> amqp_proto::Delivery {
        self.delivery
    }
}

impl<C: Settle> Delivery<C> {
    /// Acknowledges this delivery.
    ///
    /// # Errors
    ///
    /// The channel's or connection's close, or a usage error.
    pub fn ack(&self) -> Result<()> {
        self.channel.ack(self.delivery.delivery_tag, false)
    }

    /// Acknowledges this delivery and every earlier unacknowledged one on
    /// its channel (`multiple`).
    ///
    /// # Errors
    ///
    /// The channel's or connection's close, or a usage error.
    pub fn ack_multiple(&self) -> Result<()> {
        self.channel.ack(self.delivery.delivery_tag, true)
    }

    /// Refuses it (`basic.nack`), requeueing it or not.
    ///
    /// # Errors
    ///
    /// The channel's or connection's close, or a usage error.
    pub fn nack(&self, requeue: bool) -> Result<()> {
        self.channel
            .nack(self.delivery.delivery_tag, false, requeue)
    }

    /// Refuses it (`basic.reject`), requeueing it or not.
    ///
    /// # Errors
    ///
    /// The channel's or connection's close, or a usage error.
    pub fn reject(&self, requeue: bool) -> Result<()> {
        self.channel.reject(self.delivery.delivery_tag, requeue)
    }
}
