//! The RPC client's calls in both adapters, written once: a request out
//! through direct reply-to and its reply back. How a reply reaches the
//! waiting caller is the adapter's (a shared poll in the blocking adapter,
//! a routing task in the async one).
//!
//! Not public API, for the reason `channel_api` gives.

/// Writes `RpcClient::call` and `RpcClient::pending` for an adapter whose
/// `RpcClient` has these methods:
///
/// - `fn start_call(&self, exchange: &str, routing_key: &str, properties: BasicProperties) -> S`
///   registers the call and returns what `finish_call` needs (`S`);
/// - `fn finish_call(&self, started: S, body: Bytes, timeout: Duration) -> Result<Delivery>`,
///   `async` in an async adapter, publishes and waits, forgetting the
///   call however it ends;
/// - `fn calls_in_flight(&self) -> usize`.
///
/// `demo` opens each example with a `client` in scope; the other arguments
/// are those of `channel_api!`.
#[doc(hidden)]
#[macro_export]
macro_rules! rpc_api {
    (
        asyncness = [$($asyncness:tt)*],
        awaiting = [$($awaiting:tt)*],
        demo = $demo:literal,
        suffix = $suffix:literal $(,)?
    ) => {
        impl RpcClient {
            #[doc = "Publishes a request to `exchange` with `routing_key` and waits up"]
            #[doc = "to `timeout` for its reply (a message consumed without"]
            #[doc = "acknowledgement, as direct reply-to requires). A reply that comes"]
            #[doc = "after the call gave up (timed out, or was dropped) is discarded."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "use std::time::Duration;"]
            #[doc = "use amqp_proto::codec::BasicProperties;"]
            #[doc = ""]
            #[doc = "let properties = BasicProperties::default().content_type(\"application/json\");"]
            #[doc = concat!("let reply = client.call(\"\", \"rpc.add\", properties, \"[1, 2]\", Duration::from_secs(2))", $suffix, "?;")]
            #[doc = "println!(\"{:?}\", reply.body());"]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub $($asyncness)* fn call(
                &self,
                exchange: &str,
                routing_key: &str,
                properties: ::amqp_proto::codec::BasicProperties,
                body: impl Into<::bytes::Bytes>,
                timeout: ::std::time::Duration,
            ) -> $crate::Result<::amqp_proto::Delivery> {
                let started = self.start_call(exchange, routing_key, properties);
                self.finish_call(started, body.into(), timeout) $($awaiting)*
            }

            #[doc = "Requests waiting for their replies."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "assert_eq!(client.pending(), 0);"]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            #[must_use]
            pub fn pending(&self) -> usize {
                self.calls_in_flight()
            }
        }
    };
}
