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
//! use amqp_proto::Settlement;
//! use std::cell::RefCell;
//!
//! /// A channel that writes down what it was asked to send.
//! #[derive(Default)]
//! struct Recorder(RefCell<Vec<String>>);
//!
//! impl Settle for Recorder {
//!     fn settle(&self, delivery_tag: u64, how: Settlement) -> Result<()> {
//!         self.0.borrow_mut().push(format!("{delivery_tag} {how:?}"));
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
//! assert_eq!(
//!     *delivery.channel().0.borrow(),
//!     ["7 Ack { multiple: false }", "7 Nack { multiple: false, requeue: true }"]
//! );
//! # Ok::<(), amqp_io_common::Error>(())
//! ```

use amqp_proto::Settlement;

use crate::telemetry::HandedOver;
use crate::Result;

/// What a channel handle must offer for a [`Delivery`] to settle itself:
/// `basic.ack`, `basic.nack` or `basic.reject` by delivery tag, sent
/// without waiting (none of them has a reply); the core's
/// [`ChannelRef::settle`](amqp_proto::ChannelRef::settle) does it.
pub trait Settle {
    /// Settles `delivery_tag` as `how` says.
    ///
    /// # Errors
    ///
    /// The channel's or connection's close, or a usage error.
    fn settle(&self, delivery_tag: u64, how: Settlement) -> Result<()>;
}

/// A message delivered to a consumer, acknowledged through itself.
/// Dereferences to the core's [`amqp_proto::Delivery`] (body, properties,
/// tags, routing); `C` is the adapter's channel handle.
///
/// With the `tracing` feature, a delivery handed over by a consumer
/// carries its `process` span (`span()`, with the feature) from the hand-off
/// until it is settled or dropped.
#[derive(Debug)]
pub struct Delivery<C> {
    delivery: amqp_proto::Delivery,
    channel: C,
    /// Behind a lock because settling takes `&self` and ends the span;
    /// boxed, and there only when a subscriber wants the span or an
    /// observer the processing time, so a delivery nobody watches carries
    /// one word and settles without locking.
    handover: HandedOver,
}

impl<C> std::ops::Deref for Delivery<C> {
    type Target = amqp_proto::Delivery;

    fn deref(&self) -> &amqp_proto::Delivery {
        &self.delivery
    }
}

/// The core's delivery, for code that takes either it or this one (the
/// Celery worker's bookkeeping keeps the adapter's deliveries, to settle
/// them through themselves).
impl<C> std::borrow::Borrow<amqp_proto::Delivery> for Delivery<C> {
    fn borrow(&self) -> &amqp_proto::Delivery {
        &self.delivery
    }
}

impl<C> Delivery<C> {
    /// The core's delivery with the channel it arrived on (for adapters).
    #[must_use]
    pub fn new(delivery: amqp_proto::Delivery, channel: C) -> Self {
        Self::handed_over(delivery, channel, None)
    }

    /// The core's delivery with its channel and what its hand-off to the
    /// application started (its `process` span, the observer's clock; for
    /// adapters).
    #[must_use]
    #[inline]
    pub fn handed_over(delivery: amqp_proto::Delivery, channel: C, handover: HandedOver) -> Self {
        Self {
            delivery,
            channel,
            handover,
        }
    }

    /// The `process` span of this delivery, for the application to enter
    /// or instrument its handling with (`Span::none()` once settled, or
    /// when nobody records spans).
    #[cfg(feature = "tracing")]
    #[must_use]
    pub fn span(&self) -> tracing::Span {
        self.handover
            .as_ref()
            .and_then(|handover| {
                handover
                    .lock()
                    .ok()
                    .map(|handover| handover.message_span().span())
            })
            .unwrap_or_else(tracing::Span::none)
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
    /// Settles through the channel and, if that worked, ends the
    /// `process` span with how.
    fn settle(&self, how: Settlement) -> Result<()> {
        // The settle span (if any) lasts until the core took the frame.
        let settled = {
            let span = self.handover.as_ref().and_then(|handover| {
                let handover = handover.lock().ok()?;
                Some(handover.settle_span(how, &self.delivery))
            });
            let settled = self.channel.settle(self.delivery.delivery_tag, how);
            if let (Some(span), Err(error)) = (&span, &settled) {
                span.failed(error);
            }
            settled
        };
        if let Some(Ok(mut handover)) = self.handover.as_ref().map(|handover| handover.lock()) {
            handover.settled(how, settled.as_ref().err());
        }
        settled
    }
}

impl<C: Settle> Delivery<C> {
    /// Acknowledges this delivery.
    ///
    /// # Errors
    ///
    /// The channel's or connection's close, or a usage error.
    pub fn ack(&self) -> Result<()> {
        let how = Settlement::Ack { multiple: false };
        self.settle(how)
    }

    /// Acknowledges this delivery and every earlier unacknowledged one on
    /// its channel (`multiple`).
    ///
    /// # Errors
    ///
    /// The channel's or connection's close, or a usage error.
    pub fn ack_multiple(&self) -> Result<()> {
        let how = Settlement::Ack { multiple: true };
        self.settle(how)
    }

    /// Refuses it (`basic.nack`), requeueing it or not.
    ///
    /// # Errors
    ///
    /// The channel's or connection's close, or a usage error.
    pub fn nack(&self, requeue: bool) -> Result<()> {
        let how = Settlement::Nack {
            multiple: false,
            requeue,
        };
        self.settle(how)
    }

    /// Refuses it (`basic.reject`), requeueing it or not.
    ///
    /// # Errors
    ///
    /// The channel's or connection's close, or a usage error.
    pub fn reject(&self, requeue: bool) -> Result<()> {
        let how = Settlement::Reject { requeue };
        self.settle(how)
    }
}
