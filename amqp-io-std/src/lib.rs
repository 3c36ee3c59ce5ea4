//! Blocking adapter over [`amqp_proto`]: not implemented yet.
//!
//! This crate is reserved for the std-socket client (kombu-style
//! `drain_events(timeout)`, consumers, confirms). It exposes nothing usable
//! today; see the workspace README for the plan.
#![forbid(unsafe_code)]
