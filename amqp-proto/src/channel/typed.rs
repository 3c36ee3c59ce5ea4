//! Requests with a typed reply: [`ChannelRef::call`](crate::ChannelRef::call)
//! hands out a [`Pending`] that recognises its own answer among the
//! events and gives it back as the reply's own struct, so a caller never
//! matches on [`Method`] with an "unexpected reply" arm.

use std::marker::PhantomData;

use crate::event::{Event, Failure, RequestId};
use crate::spec::{self, Method};

/// A synchronous method a client sends on a channel whose reply is one
/// method: the reply's type, and how to read it.
pub trait Synchronous: Into<Method> + sealed::Sealed {
    /// The reply (`QueueDeclareOk` for `QueueDeclare`, ...).
    type Reply;

    /// The reply as its own struct, if `method` is it.
    fn reply(method: &Method) -> Option<Self::Reply>;
}

mod sealed {
    pub trait Sealed {}
}

macro_rules! synchronous {
    ($($request:ident => $reply:ident,)*) => {
        $(
            impl sealed::Sealed for spec::$request {}

            impl Synchronous for spec::$request {
                type Reply = spec::$reply;

                fn reply(method: &Method) -> Option<spec::$reply> {
                    match method {
                        Method::$reply(reply) => Some(reply.clone()),
                        _ => None,
                    }
                }
            }
        )*
    };
}

synchronous! {
    ChannelFlow => ChannelFlowOk,
    ExchangeDeclare => ExchangeDeclareOk,
    ExchangeDelete => ExchangeDeleteOk,
    ExchangeBind => ExchangeBindOk,
    ExchangeUnbind => ExchangeUnbindOk,
    QueueDeclare => QueueDeclareOk,
    QueueBind => QueueBindOk,
    QueueUnbind => QueueUnbindOk,
    QueuePurge => QueuePurgeOk,
    QueueDelete => QueueDeleteOk,
    BasicQos => BasicQosOk,
    BasicCancel => BasicCancelOk,
    BasicRecover => BasicRecoverOk,
    ConfirmSelect => ConfirmSelectOk,
    TxSelect => TxSelectOk,
    TxCommit => TxCommitOk,
    TxRollback => TxRollbackOk,
}

/// A request of type `M` that will be answered: by its reply
/// ([`Event::Reply`]) or by the close of its channel or connection
/// ([`Event::RequestFailed`]). Exactly one of the two comes for it.
///
/// ```
/// use amqp_proto::spec::{QueueDeclare, QueueDeclareOk};
/// use amqp_proto::{Connection, Event, Pending};
///
/// /// Feeds events to `pending` until it is answered; keeps the others.
/// fn answered(
///     pending: &Pending<QueueDeclare>,
///     events: &mut Vec<Event>,
///     connection: &mut Connection,
/// ) -> Option<Result<QueueDeclareOk, amqp_proto::Failure>> {
///     while let Some(event) = connection.poll_event() {
///         match pending.answer(&event) {
///             Some(outcome) => return Some(outcome),
///             None => events.push(event),
///         }
///     }
///     None
/// }
/// ```
#[derive(Debug)]
#[must_use = "the reply is told apart from other events by its Pending"]
pub struct Pending<M> {
    request: RequestId,
    _method: PhantomData<fn() -> M>,
}

impl<M> Clone for Pending<M> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<M> Copy for Pending<M> {}

impl<M: Synchronous> Pending<M> {
    pub(crate) fn new(request: RequestId) -> Self {
        Self {
            request,
            _method: PhantomData,
        }
    }

    /// The request's id, as its [`Event::Reply`] or
    /// [`Event::RequestFailed`] carries it.
    #[must_use]
    pub fn request(&self) -> RequestId {
        self.request
    }

    /// This request's outcome if `event` is its answer: the reply as its
    /// own struct, or why none will come. `None` for every other event.
    #[must_use]
    pub fn answer(&self, event: &Event) -> Option<Result<M::Reply, Failure>> {
        match event {
            Event::Reply {
                request, method, ..
            } if *request == self.request => M::reply(method).map(Ok),
            Event::RequestFailed {
                request, failure, ..
            } if *request == self.request => Some(Err(failure.clone())),
            _ => None,
        }
    }
}
