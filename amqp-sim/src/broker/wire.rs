//! Encoding what the broker writes: method frames, contents split into
//! frame-max-sized body frames, heartbeats.

use amqp_proto::codec::{
    body_frame_header, encode_header_frame, encode_heartbeat_frame, encode_method_frame,
    BasicProperties, ContentHeader,
};
use amqp_proto::spec::constants::FRAME_END;
use amqp_proto::spec::Method;
use bytes::{BufMut, BytesMut};

use super::Log;

/// Appends a method frame. The broker only encodes values it made or
/// read from the client, so a failure is the model's bug: it is logged
/// as a fault rather than unwrapped.
pub(super) fn method(
    out: &mut BytesMut,
    channel: u16,
    method: &Method,
    frame_max: u32,
    log: &mut Log,
) {
    if let Err(error) = encode_method_frame(channel, method, frame_max, out) {
        log.fault(format!("broker cannot encode {}: {error}", method.name()));
    }
}

/// Appends a content header and the body in as many body frames as
/// frame-max needs.
pub(super) fn content(
    out: &mut BytesMut,
    channel: u16,
    properties: &BasicProperties,
    body: &[u8],
    frame_max: u32,
    log: &mut Log,
) {
    let header = ContentHeader::basic(body.len() as u64, properties.clone());
    if let Err(error) = encode_header_frame(channel, &header, frame_max, out) {
        log.fault(format!("broker cannot encode a content header: {error}"));
        return;
    }
    let piece = frame_max.saturating_sub(8).max(1) as usize;
    for chunk in body.chunks(piece) {
        match body_frame_header(channel, chunk.len(), frame_max) {
            Ok(frame_header) => {
                out.put_slice(&frame_header);
                out.put_slice(chunk);
                out.put_u8(FRAME_END);
            }
            Err(error) => {
                log.fault(format!("broker cannot encode a body frame: {error}"));
                return;
            }
        }
    }
}

/// Appends a heartbeat frame.
pub(super) fn heartbeat(out: &mut BytesMut) {
    encode_heartbeat_frame(out);
}
