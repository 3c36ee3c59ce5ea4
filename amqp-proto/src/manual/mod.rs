//! The manual: how the calls of this crate fit together, beyond what the
//! reference of each item says.
//!
//! This module holds documentation only, no code, in the manner of
//! `rustls::manual`. Each chapter is a module of its own; like the rest of
//! the crate's docs, every example in them runs as a test (`cargo test -p
//! amqp-proto --doc`), against a server played in memory on a simulated
//! clock, and asserts what the text around it claims.
//!
//! # Chapters
//!
//! 1. [Driving the core](driving_the_core): the loop an adapter runs over
//!    a socket and a clock. The order of input, time and output; partial
//!    and vectored writes; back-pressure in both directions; timers and
//!    heartbeats; channel handles; shutdown and draining. For anyone
//!    writing an adapter for a runtime of their own, or reading one.

pub mod driving_the_core;
