//! The consumer calls both adapters offer, written once: its tag, its
//! channel and its cancel. An adapter's `Consumer` adds only how it waits
//! for deliveries.
//!
//! Not public API, for the reason `channel_api` gives.

/// Writes the shared methods of an adapter's `Consumer`, which must have
/// the fields `channel: Channel` (the adapter's),
/// `consumer: ConsumerHandle` and `spans: ProcessSpans`. `demo` opens each example with a
/// `consumer` in scope; the other arguments are those of `channel_api!`.
#[doc(hidden)]
#[macro_export]
// `crate::` names the adapter's own types, at the call site, on purpose.
#[allow(clippy::crate_in_macro_def)]
macro_rules! consumer_api {
    (
        type = $consumer:ty,
        asyncness = [$($asyncness:tt)*],
        awaiting = [$($awaiting:tt)*],
        demo = $demo:literal,
        suffix = $suffix:literal $(,)?
    ) => {
        impl $consumer {
            #[doc = "The consumer tag."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "println!(\"consuming as {}\", consumer.tag());"]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            #[must_use]
            pub fn tag(&self) -> &::amqp_proto::codec::ShortString {
                self.consumer.tag()
            }

            #[doc = "The channel it consumes on."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = concat!("let delivery = consumer.recv_timeout(std::time::Duration::from_secs(5))", $suffix, "?;")]
            #[doc = "// Two at once: this one and every earlier one on the channel."]
            #[doc = "consumer.channel().ack(delivery.delivery_tag, true)?;"]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            #[must_use]
            pub fn channel(&self) -> &crate::Channel {
                &self.channel
            }

            #[doc = "Cancels the consumer and waits for the server's `cancel-ok`"]
            #[doc = "([`Channel::basic_cancel`](crate::Channel::basic_cancel) with its"]
            #[doc = "tag); deliveries received but not taken go back to the queue."]
            #[doc = "Dropped midway (or dropping the consumer instead), it is"]
            #[doc = "cancelled all the same."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = concat!("consumer.cancel()", $suffix, "?;")]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub $($asyncness)* fn cancel(self) -> $crate::Result<()> {
                self.channel.basic_cancel(self.consumer.tag()) $($awaiting)*
            }

            /// Gives a delivery the channel to acknowledge itself on.
            /// Opens its `process` span: the delivery is handed over now.
            fn wrap(&self, delivery: ::amqp_proto::Delivery) -> crate::Delivery {
                let handover = self.spans.open(&delivery);
                crate::Delivery::handed_over(delivery, self.channel.clone(), handover)
            }
        }
    };
}
