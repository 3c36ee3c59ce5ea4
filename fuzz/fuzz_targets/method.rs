//! Arbitrary method payloads (class id, method id, fields): whatever
//! decodes must re-encode to bytes that decode to the same method.
#![no_main]

use amqp_proto::codec::{decode_method, encode_method, DecodeLimits};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits::default();
    if let Ok(method) = decode_method(data, &limits) {
        let mut encoded = BytesMut::new();
        encode_method(&method, &mut encoded).expect("a decoded method re-encodes");
        assert_eq!(decode_method(&encoded, &limits), Ok(method));
    }
});
