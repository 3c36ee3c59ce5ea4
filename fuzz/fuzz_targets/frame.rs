//! Arbitrary server bytes through the streaming frame decoder, split at a
//! size the first byte chooses. Every frame decoded must re-encode and
//! decode to itself; every error must carry a connection-exception reply
//! code (501-541).
#![no_main]

use amqp_proto::codec::{DecodeLimits, FrameDecoder};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

const LIMITS: DecodeLimits = DecodeLimits {
    max_frame_size: 65_536,
    max_table_depth: 32,
};

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let mut decoder = FrameDecoder::new(LIMITS);
    'feed: for piece in input.chunks(usize::from(split) + 1) {
        decoder.extend_from_slice(piece);
        loop {
            match decoder.decode() {
                Ok(Some(frame)) => {
                    let mut encoded = BytesMut::new();
                    frame.encode(&mut encoded, u32::MAX).expect("a decoded frame re-encodes");
                    let mut again = FrameDecoder::new(DecodeLimits {
                        max_frame_size: u32::MAX,
                        ..LIMITS
                    });
                    again.extend_from_slice(&encoded);
                    assert_eq!(again.decode(), Ok(Some(frame)));
                    assert_eq!(again.buffered_len(), 0);
                }
                Ok(None) => break,
                Err(error) => {
                    let code = error.reply_code().0;
                    assert!((501..=541).contains(&code), "{error}: {code}");
                    break 'feed;
                }
            }
        }
        // Nothing beyond one frame of the limit is ever held.
        assert!(decoder.buffered_len() <= piece.len() + LIMITS.max_frame_size as usize);
    }
});
