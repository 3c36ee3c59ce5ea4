//! What the unit tests of the kombu modules share.

use amqp_proto::codec::{BasicProperties, Content, ContentHeader};
use amqp_proto::Delivery;

/// A delivery on channel 1 with `properties` and `body`, as a consumer
/// would receive it.
pub(crate) fn delivery(properties: BasicProperties, body: &[u8]) -> Delivery {
    Delivery {
        channel: 1,
        consumer_tag: "c".into(),
        delivery_tag: 1,
        redelivered: false,
        exchange: "".into(),
        routing_key: "".into(),
        content: Content {
            header: Box::new(ContentHeader::basic(body.len() as u64, properties)),
            body: bytes::Bytes::copy_from_slice(body),
        },
    }
}
