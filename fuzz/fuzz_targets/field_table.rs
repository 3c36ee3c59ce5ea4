//! Arbitrary field tables: whatever decodes (within the depth limit) must
//! re-encode to bytes that decode to the same table.
#![no_main]

use amqp_proto::codec::{decode_field_table, encode_field_table};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(table) = decode_field_table(data, 32) {
        assert!(table.depth() <= 32);
        let mut encoded = BytesMut::new();
        encode_field_table(&table, &mut encoded).expect("a decoded table re-encodes");
        assert_eq!(decode_field_table(&encoded, 32), Ok(table));
    }
});
