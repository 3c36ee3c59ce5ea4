//! Arbitrary content header payloads: whatever decodes must re-encode to
//! bytes that decode to the same header.
#![no_main]

use amqp_proto::codec::{decode_content_header, encode_content_header, DecodeLimits};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits::default();
    if let Ok(header) = decode_content_header(data, &limits) {
        let mut encoded = BytesMut::new();
        encode_content_header(&header, &mut encoded).expect("a decoded header re-encodes");
        assert_eq!(decode_content_header(&encoded, &limits), Ok(header));
    }
});
