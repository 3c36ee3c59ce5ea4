//! Celery tasks over either adapter, written once: the
//! [`celery`](crate::celery) module decides everything; this glue
//! declares, publishes, settles and waits through the adapter's channel
//! calls, which have the same names in both.
//!
//! Not public API, for the reason `channel_api` gives.

/// Writes what an adapter's `celery` module shares with the other one:
/// the `Client` (over the adapter's `ClientInner`, which has the fields
/// `channel: Channel` and `state: Mutex<celery::Client<Waiter>>`, and
/// whose `Client` has `fn started(channel, results: Consumer, state) ->
/// Self` and `fn wait_for(&self, waiter: &Waiter, id: &str, timeout) ->
/// Result<ResultMessage, celery::Error>`, `async` in an async adapter, for
/// a `Waiter: Clone + Default` the adapter defines, with `fn result(&self)
/// -> Option<ResultMessage>` giving the result once it came), its
/// `AsyncResult`,
/// and the worker's `consume_tasks` and `answer`.
///
/// `krate` is the adapter crate's name; `client_demo` opens each client
/// example with a `client` in scope; the other arguments are those of
/// `channel_api!`.
#[doc(hidden)]
#[macro_export]
// `crate::` names the adapter's own types, at the call site, on purpose.
#[allow(clippy::crate_in_macro_def)]
macro_rules! celery_api {
    (
        krate = $krate:ident,
        asyncness = [$($asyncness:tt)*],
        awaiting = [$($awaiting:tt)*],
        demo = $demo:literal,
        client_demo = $client_demo:literal,
        suffix = $suffix:literal $(,)?
    ) => {
        pub use $crate::celery::{
            AckPolicy, ClientSettings, Error, Failure, Request, ResultMessage, Signature, State,
            TaskOptions, TaskSettings, WorkerSettings, WorkerStats,
        };

        fn lock<T>(mutex: &::std::sync::Mutex<T>) -> ::std::sync::MutexGuard<'_, T> {
            mutex.lock().unwrap_or_else(::std::sync::PoisonError::into_inner)
        }

        #[doc = "A worker consuming its queue, from [`Worker::consume`]: serve it"]
        #[doc = "with its `run` methods (or, in the blocking adapter, `serve` in a"]
        #[doc = "loop of the application's own)."]
        pub struct Consuming {
            worker: $crate::celery::Worker<Handler, Delivery>,
            channel: Channel,
            consumer: Consumer,
        }

        impl ::std::fmt::Debug for Worker {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct("Worker")
                    .field("settings", self.worker.settings())
                    .finish_non_exhaustive()
            }
        }

        impl ::std::fmt::Debug for Consuming {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct("Consuming")
                    .field("settings", self.worker.settings())
                    .field("stats", &self.worker.stats())
                    .finish_non_exhaustive()
            }
        }

        impl Consuming {
            #[doc = "What it did so far."]
            #[must_use]
            pub fn stats(&self) -> WorkerStats {
                self.worker.stats()
            }
        }

        #[doc = "Sends tasks to Celery workers and gets their results through the"]
        #[doc = "`rpc://` result backend: a channel of its own, consuming a result"]
        #[doc = "queue of its own. Cheap to clone; every clone sends through the"]
        #[doc = "same channel and shares the result queue, from any thread."]
        #[doc = ""]
        #[doc = "```no_run"]
        #[doc = $demo]
        #[doc = concat!("use ", stringify!($krate), "::celery::{Client, TaskOptions};")]
        #[doc = "use std::time::Duration;"]
        #[doc = ""]
        #[doc = concat!("let client = Client::new(&connection)", $suffix, "?;")]
        #[doc = concat!("let sum = client.send_task(\"tasks.add\", (2, 3), (), TaskOptions::default())", $suffix, "?;")]
        #[doc = concat!("assert_eq!(sum.get_as::<i64>(Duration::from_secs(10))", $suffix, "?, 5);")]
        #[doc = "# Ok(()) }"]
        #[doc = "```"]
        #[derive(Debug, Clone)]
        pub struct Client {
            inner: ::std::sync::Arc<ClientInner>,
        }

        impl Client {
            #[doc = "A client with a fresh result queue (declared and consumed now,"]
            #[doc = "before any task is sent, so that no result is missed)."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = concat!("let client = ", stringify!($krate), "::celery::Client::new(&connection)", $suffix, "?;")]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub $($asyncness)* fn new(connection: &crate::Connection) -> $crate::Result<Self> {
                Self::with_settings(connection, ClientSettings::default()) $($awaiting)*
            }

            #[doc = "A client with these settings (a result queue of a given name, its"]
            #[doc = "expiry, the `origin` header)."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = concat!("use ", stringify!($krate), "::celery::{Client, ClientSettings};")]
            #[doc = ""]
            #[doc = "let mut settings = ClientSettings::default();"]
            #[doc = "settings.origin = Some(\"billing@host\".into());"]
            #[doc = concat!("let client = Client::with_settings(&connection, settings)", $suffix, "?;")]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub $($asyncness)* fn with_settings(
                connection: &crate::Connection,
                settings: ClientSettings,
            ) -> $crate::Result<Self> {
                let state = $crate::celery::Client::new(settings);
                let channel = connection.channel() $($awaiting)* ?;
                channel.queue_declare(state.result_declare()) $($awaiting)* ?;
                channel.basic_qos(state.result_qos()) $($awaiting)* ?;
                let results = channel.basic_consume(state.result_consume()) $($awaiting)* ?;
                Ok(Self::started(channel, results, state))
            }

            #[doc = "The queue results come back on (every task's `reply_to`)."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $client_demo]
            #[doc = "println!(\"results on {}\", client.result_queue());"]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            #[must_use]
            pub fn result_queue(&self) -> String {
                lock(&self.inner.state).result_queue().to_owned()
            }

            #[doc = "How many tasks sent through this client wait for their results."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $client_demo]
            #[doc = "assert_eq!(client.pending(), 0);"]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            #[must_use]
            pub fn pending(&self) -> usize {
                lock(&self.inner.state).pending()
            }

            #[doc = "Sends the task `name` with positional arguments `args` (anything"]
            #[doc = "that serializes to a JSON array: a tuple, a `Vec`, `json!([...])`;"]
            #[doc = "`()` for none) and keyword arguments `kwargs` (a struct, a map,"]
            #[doc = "`json!({...})`; `()` for none), as Celery's `send_task` does; the"]
            #[doc = "first send to a queue declares it as Celery does. Returns at once"]
            #[doc = "with the task's [`AsyncResult`]."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $client_demo]
            #[doc = concat!("use ", stringify!($krate), "::celery::TaskOptions;")]
            #[doc = "use serde_json::json;"]
            #[doc = "use std::time::Duration;"]
            #[doc = ""]
            #[doc = "let options = TaskOptions::default().queue(\"reports\").expires(Duration::from_secs(60));"]
            #[doc = concat!("let echo = client.send_task(\"tasks.echo\", (1, \"two\"), json!({\"three\": 3}), options)", $suffix, "?;")]
            #[doc = concat!("println!(\"{}\", echo.get(Duration::from_secs(10))", $suffix, "?);")]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            #[doc = ""]
            #[doc = "# Errors"]
            #[doc = ""]
            #[doc = "[`Error::Arguments`] for arguments that are no array or object;"]
            #[doc = "[`Error::Amqp`] when declaring or publishing failed."]
            pub $($asyncness)* fn send_task(
                &self,
                name: &str,
                args: impl ::serde::Serialize,
                kwargs: impl ::serde::Serialize,
                options: TaskOptions,
            ) -> ::std::result::Result<AsyncResult, Error> {
                let signature = Signature::from_serialize(name, &args, &kwargs, options)?;
                self.send(&signature) $($awaiting)*
            }

            #[doc = "Sends a task built as a [`Signature`]."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $client_demo]
            #[doc = concat!("use ", stringify!($krate), "::celery::Signature;")]
            #[doc = "use serde_json::json;"]
            #[doc = ""]
            #[doc = "let add = Signature::new(\"tasks.add\").args(vec![json!(2), json!(3)]);"]
            #[doc = concat!("let result = client.send(&add)", $suffix, "?;")]
            #[doc = "println!(\"sent {}\", result.id());"]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            #[doc = ""]
            #[doc = "# Errors"]
            #[doc = ""]
            #[doc = "[`Error::Amqp`] when declaring or publishing failed."]
            pub $($asyncness)* fn send(
                &self,
                signature: &Signature,
            ) -> ::std::result::Result<AsyncResult, Error> {
                let waiter = Waiter::default();
                let sent = lock(&self.inner.state).send(
                    signature,
                    Some(waiter.clone()),
                    ::std::time::SystemTime::now(),
                );
                // Made first, so that a failure below forgets the waiter.
                let result = AsyncResult {
                    client: self.clone(),
                    id: sent.id,
                    waiter: (!sent.ignored).then_some(waiter),
                };
                if let Some(topology) = sent.declare {
                    let name = topology.1.queue.to_string();
                    if let Err(error) = declare(&self.inner.channel, topology) $($awaiting)* {
                        // Declared again with the next send.
                        lock(&self.inner.state).forget_declared(&name);
                        return Err(error.into());
                    }
                }
                let message = sent.message;
                self.inner
                    .channel
                    .publish(&message.publish, &message.properties, message.body)
                    $($awaiting)* ?;
                Ok(result)
            }
        }

        #[doc = "A task sent, and its result to come (Celery's `AsyncResult`)."]
        #[doc = "Dropping it stops waiting: a result that comes later is dropped."]
        #[doc = ""]
        #[doc = "```no_run"]
        #[doc = $client_demo]
        #[doc = concat!("use ", stringify!($krate), "::celery::{Error, TaskOptions};")]
        #[doc = "use std::time::Duration;"]
        #[doc = ""]
        #[doc = concat!("let failing = client.send_task(\"tasks.fail\", (\"boom\",), (), TaskOptions::default())", $suffix, "?;")]
        #[doc = concat!("match failing.get(Duration::from_secs(10))", $suffix, " {")]
        #[doc = "    Err(Error::Failed { failure, .. }) => {"]
        #[doc = "        assert_eq!((failure.exc_type.as_str(), failure.message().as_str()), (\"ValueError\", \"boom\"));"]
        #[doc = "    }"]
        #[doc = "    other => panic!(\"{other:?}\"),"]
        #[doc = "}"]
        #[doc = "# Ok(()) }"]
        #[doc = "```"]
        #[derive(Debug)]
        pub struct AsyncResult {
            client: Client,
            id: String,
            /// `None` for a task sent with `ignore_result`.
            waiter: Option<Waiter>,
        }

        impl AsyncResult {
            /// The task id.
            #[must_use]
            pub fn id(&self) -> &str {
                &self.id
            }

            /// The last state reported: `PENDING` until a worker reports
            /// another, the final state once the result came.
            #[must_use]
            pub fn state(&self) -> State {
                if let Some(result) = self.waiter.as_ref().and_then(Waiter::result) {
                    return result.state;
                }
                lock(&self.client.inner.state)
                    .state(&self.id)
                    .cloned()
                    .unwrap_or(State::Pending)
            }

            #[doc = "Waits up to `timeout` for the final result message, success or"]
            #[doc = "failure alike; once it came, returns it again at once."]
            #[doc = ""]
            #[doc = "# Errors"]
            #[doc = ""]
            #[doc = "[`Error::Timeout`] (the task may still run: wait again),"]
            #[doc = "[`Error::ResultIgnored`], or [`Error::Amqp`] when the result"]
            #[doc = "consumer ended."]
            pub $($asyncness)* fn wait(
                &self,
                timeout: ::std::time::Duration,
            ) -> ::std::result::Result<ResultMessage, Error> {
                let Some(waiter) = &self.waiter else {
                    return Err(Error::ResultIgnored(self.id.clone()));
                };
                self.client.wait_for(waiter, &self.id, timeout) $($awaiting)*
            }

            #[doc = "Waits up to `timeout` for the task's return value (Celery's"]
            #[doc = "`get(timeout)`)."]
            #[doc = ""]
            #[doc = "# Errors"]
            #[doc = ""]
            #[doc = "[`Error::Failed`] when the task failed, was revoked or is unknown"]
            #[doc = "to the worker, with the failure as the worker reported it; the"]
            #[doc = "errors of [`wait`](Self::wait)."]
            pub $($asyncness)* fn get(
                &self,
                timeout: ::std::time::Duration,
            ) -> ::std::result::Result<::serde_json::Value, Error> {
                let result = self.wait(timeout) $($awaiting)* ?;
                result.outcome().map_err(|failure| Error::Failed {
                    task_id: self.id.clone(),
                    failure: Box::new(failure),
                })
            }

            #[doc = "[`get`](Self::get), the value read as `T`."]
            #[doc = ""]
            #[doc = "# Errors"]
            #[doc = ""]
            #[doc = "[`Error::ResultType`] when it is no `T`; those of"]
            #[doc = "[`get`](Self::get)."]
            pub $($asyncness)* fn get_as<T: ::serde::de::DeserializeOwned>(
                &self,
                timeout: ::std::time::Duration,
            ) -> ::std::result::Result<T, Error> {
                let value = self.get(timeout) $($awaiting)* ?;
                ::serde_json::from_value(value).map_err(|error| Error::ResultType {
                    task_id: self.id.clone(),
                    error,
                })
            }
        }

        impl Drop for AsyncResult {
            fn drop(&mut self) {
                lock(&self.client.inner.state).forget(&self.id);
            }
        }

        /// Declares an exchange, then a queue, then binds them.
        $($asyncness)* fn declare(
            channel: &crate::Channel,
            (exchange, queue, bind): $crate::pidbox::Topology,
        ) -> $crate::Result<()> {
            channel.exchange_declare(exchange) $($awaiting)* ?;
            channel.queue_declare(queue) $($awaiting)* ?;
            channel.queue_bind(bind) $($awaiting)*
        }

        /// Declares the worker's queue as Celery does, sets its prefetch
        /// and starts consuming it.
        $($asyncness)* fn consume_tasks<H>(
            channel: &crate::Channel,
            worker: &$crate::celery::Worker<H, crate::Delivery>,
        ) -> $crate::Result<crate::Consumer> {
            declare(channel, worker.topology()) $($awaiting)* ?;
            channel.basic_qos(worker.qos()) $($awaiting)* ?;
            channel.basic_consume(worker.consume()) $($awaiting)*
        }

        /// Carries out an `Action::Reply`: logs why the task was refused,
        /// publishes the result, then settles the delivery (so that a late
        /// acknowledgement follows the result on the channel).
        $($asyncness)* fn answer(
            channel: &crate::Channel,
            delivery: &crate::Delivery,
            reply: Option<$crate::celery::Outgoing>,
            settle: Option<::amqp_proto::Settlement>,
            refused: Option<&$crate::celery::Refused>,
        ) -> $crate::Result<()> {
            if let Some(refused) = refused {
                $crate::celery::log_refused(refused);
            }
            if let Some(reply) = reply {
                channel
                    .publish(&reply.publish, &reply.properties, reply.body)
                    $($awaiting)* ?;
            }
            match settle {
                Some(::amqp_proto::Settlement::Ack { .. }) => delivery.ack(),
                Some(::amqp_proto::Settlement::Reject { requeue }) => delivery.reject(requeue),
                Some(::amqp_proto::Settlement::Nack { requeue, .. }) => delivery.nack(requeue),
                None => Ok(()),
            }
        }
    };
}
