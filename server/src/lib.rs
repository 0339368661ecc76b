//! A gost-compatible server engine: services (listener + handler), configured with gost's
//! command line or YAML/JSON files. The `pht-server` binary is a thin shell over it.

pub mod access;
pub mod config;
pub mod forwarder;
pub mod handler;
pub mod listener;
pub mod metrics;
pub mod plan;
mod registry;
pub mod router;
pub mod selector;
pub mod service;
pub mod tls;

#[cfg(test)]
mod fuzz_tests;
