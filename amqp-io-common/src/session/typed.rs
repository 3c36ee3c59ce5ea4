//! What each typed channel call returns, from the reply the session
//! sorted: written once for every adapter, with the protocol's rules for
//! `nowait` (no reply comes, so the answer is what the request implies).

use amqp_proto::codec::ShortString;
use amqp_proto::spec::{Method, QueueDeclareOk};
use amqp_proto::GetMessage;

use super::Reply;
use crate::Error;

/// A reply the call did not expect (the core matched it by kind, so only a
/// broken server gets here).
#[must_use]
pub fn unexpected(operation: &'static str, reply: &Reply) -> Error {
    let reply = match reply {
        Reply::Method(method) => method.name().to_owned(),
        Reply::Get(_) => "basic.get-ok".to_owned(),
        Reply::Opened => "channel.open-ok".to_owned(),
    };
    Error::UnexpectedReply { operation, reply }
}

/// A call that must be answered sent nothing to answer (the core said no
/// reply would come).
#[must_use]
pub fn missing(operation: &'static str) -> Error {
    Error::UnexpectedReply {
        operation,
        reply: "no reply expected".to_owned(),
    }
}

/// The method a generic call returns: `None` when none came (`nowait`, or a
/// method without a reply).
pub fn method(operation: &'static str, reply: Option<Reply>) -> Result<Option<Method>, Error> {
    match reply {
        None => Ok(None),
        Some(Reply::Method(method)) => Ok(Some(method)),
        Some(other) => Err(unexpected(operation, &other)),
    }
}

/// `queue.declare`: its declare-ok, or with `nowait` the one it implies
/// (the queue named, nothing counted; a `nowait` declaration must name its
/// queue, which the core checks).
pub fn queue_declared(queue: ShortString, reply: Option<Method>) -> Result<QueueDeclareOk, Error> {
    match reply {
        Some(Method::QueueDeclareOk(ok)) => Ok(ok),
        None => Ok(QueueDeclareOk {
            queue,
            message_count: 0,
            consumer_count: 0,
        }),
        Some(other) => Err(unexpected("queue.declare", &Reply::Method(other))),
    }
}

/// `queue.purge` and `queue.delete`: the messages counted (0 with `nowait`).
pub fn message_count(operation: &'static str, reply: Option<Method>) -> Result<u32, Error> {
    match reply {
        Some(Method::QueuePurgeOk(ok)) => Ok(ok.message_count),
        Some(Method::QueueDeleteOk(ok)) => Ok(ok.message_count),
        None => Ok(0),
        Some(other) => Err(unexpected(operation, &Reply::Method(other))),
    }
}

/// `basic.get`: the message, or `None` for get-empty.
pub fn got(reply: Reply) -> Result<Option<GetMessage>, Error> {
    match reply {
        Reply::Get(message) => Ok(Some(*message)),
        Reply::Method(Method::BasicGetEmpty(_)) => Ok(None),
        other => Err(unexpected("basic.get", &other)),
    }
}

/// `basic.consume`: the consumer's tag as the server confirmed it.
pub fn consumed(reply: Reply) -> Result<ShortString, Error> {
    match reply {
        Reply::Method(Method::BasicConsumeOk(ok)) => Ok(ok.consumer_tag),
        other => Err(unexpected("basic.consume", &other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amqp_proto::spec::{BasicGetEmpty, QueuePurgeOk};

    #[test]
    fn nowait_replies_are_what_the_request_implies() {
        let declared = queue_declared("jobs".into(), None).unwrap();
        assert_eq!(declared.queue, "jobs");
        assert_eq!(message_count("queue.purge", None).unwrap(), 0);
    }

    #[test]
    fn replies_map_to_their_results() {
        let purged = QueuePurgeOk { message_count: 7 }.into();
        assert_eq!(message_count("queue.purge", Some(purged)).unwrap(), 7);
        let empty = Reply::Method(BasicGetEmpty::default().into());
        assert!(got(empty).unwrap().is_none());
        let wrong = Reply::Method(BasicGetEmpty::default().into());
        assert!(matches!(
            consumed(wrong),
            Err(Error::UnexpectedReply {
                operation: "basic.consume",
                ..
            })
        ));
    }
}
