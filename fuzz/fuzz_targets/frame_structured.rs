//! Structure-aware: arbitrary valid frames (built by `arbitrary`) are
//! encoded, concatenated and fed back in arbitrary chunk sizes; the decoder
//! must return exactly the frames that were encoded. This reaches deep into
//! method and property decoding, which random bytes rarely get past.
#![no_main]

use amqp_proto::codec::{DecodeLimits, Frame, FrameDecoder};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (Vec<Frame>, Vec<u8>)| {
    let (frames, splits) = input;
    let mut wire = BytesMut::new();
    let mut expected = Vec::new();
    for frame in frames {
        // Only the basic class carries content; other class ids are refused
        // on decode by design, so they are not round-trip material.
        if let Frame::Header { header, .. } = &frame {
            if header.class_id != amqp_proto::spec::BASIC_CLASS_ID {
                continue;
            }
        }
        if frame.encode(&mut wire, u32::MAX).is_ok() {
            expected.push(frame);
        }
    }
    let mut decoder = FrameDecoder::new(DecodeLimits {
        max_frame_size: u32::MAX,
        max_table_depth: 1_000,
    });
    let mut decoded = Vec::new();
    let mut rest = &wire[..];
    let mut sizes = splits.iter().map(|size| usize::from(*size) + 1).cycle();
    while !rest.is_empty() {
        let take = sizes.next().unwrap_or(rest.len()).min(rest.len());
        let (piece, tail) = rest.split_at(take);
        rest = tail;
        decoder.extend_from_slice(piece);
        loop {
            match decoder.decode() {
                Ok(Some(frame)) => decoded.push(frame),
                Ok(None) => break,
                // The encoder refuses tables nested deeper than a decoder
                // accepts, so whatever it wrote decodes.
                Err(error) => panic!("valid frames decode: {error:?}"),
            }
        }
    }
    assert_eq!(decoded, expected);
});
