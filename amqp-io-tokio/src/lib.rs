//! Async adapter over [`amqp_proto`]: not implemented yet.
//!
//! This crate is reserved for the tokio client (cloneable handles, consumer
//! streams, confirm futures). It exposes nothing usable today; see the
//! workspace README for the plan.
#![forbid(unsafe_code)]
