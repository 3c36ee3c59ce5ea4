//! Trace context in arbitrary headers: the bytes are a length-prefixed
//! string for `TraceParent::parse` and then a field table (as a delivery's
//! `headers` would arrive). Nothing may panic; a parsed `traceparent`
//! writes back to 55 bytes that parse to the same value; a context comes
//! out of a table only from a readable, valid `traceparent`; injecting
//! into the decoded table never overwrites one.
#![no_main]

use amqp_proto::codec::{decode_field_table, BasicProperties};
use amqp_proto::propagation::{
    extract, inject, Headers, TraceParent, TRACEPARENT, TRACESTATE, TRACESTATE_MAX_LEN,
};
use libfuzzer_sys::fuzz_target;

fn check_parse(text: &str) -> Option<TraceParent> {
    let parent = TraceParent::parse(text)?;
    assert!(parent.is_valid());
    let mut written = String::new();
    parent.write(&mut written);
    assert_eq!(written.len(), 55);
    assert_eq!(written, parent.to_string());
    assert_eq!(TraceParent::parse(&written), Some(parent));
    if text.starts_with("00-") {
        assert_eq!(written, text, "version 00 has one spelling");
    }
    Some(parent)
}

fuzz_target!(|data: &[u8]| {
    // The first byte says how many of the next bytes are the string.
    let (text, table) = match data.split_first() {
        Some((&len, rest)) => rest.split_at(usize::from(len).min(rest.len())),
        None => return,
    };
    let text = String::from_utf8_lossy(text);
    check_parse(&text);

    let Ok(table) = decode_field_table(table, 32) else { return };
    let headers = Headers(&table);
    for key in headers.keys() {
        if let Some(value) = headers.get(key) {
            check_parse(value);
        }
    }
    let mut props = BasicProperties::default().headers(table.clone());
    match extract(&props) {
        Some((parent, tracestate)) => {
            let text =
                headers.get(TRACEPARENT).expect("a context comes from a readable traceparent");
            assert_eq!(TraceParent::parse(text.trim_matches([' ', '\t'])), Some(parent));
            if let Some(tracestate) = tracestate {
                assert!(!tracestate.is_empty() && tracestate.len() <= TRACESTATE_MAX_LEN);
                assert!(headers.get(TRACESTATE).is_some_and(|all| all.contains(tracestate)));
            }
        }
        None => {
            let parsed = headers
                .get(TRACEPARENT)
                .and_then(|text| TraceParent::parse(text.trim_matches([' ', '\t'])));
            assert_eq!(parsed, None);
        }
    }

    let ours = TraceParent { trace_id: [0xab; 16], parent_id: [0xcd; 8], flags: 1 };
    let had_traceparent = table.get(TRACEPARENT).is_some();
    let injected = inject(&mut props, &ours, Some(&text));
    assert_eq!(injected, !had_traceparent);
    if injected {
        assert_eq!(extract(&props).map(|(parent, _)| parent), Some(ours));
    } else {
        assert_eq!(props.headers.as_ref(), Some(&table));
    }
});
