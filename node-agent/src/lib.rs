//! The tailmesh node agent: a per-node HTTP/1.1 and TCP proxy.
//!
//! - [`config`]: the typed config schema, loading and validation.
//! - [`snapshot`]: the runtime snapshot (routes, clusters, types) workers use.
//! - [`http1`]: sans-IO HTTP/1.1 framing and hardening.
//! - [`proxy`]: the sans-IO proxy session (bytes and events in, actions out).
//! - [`policy`]: sans-IO rate limits and circuit breakers, shared node-wide.
//! - [`tls`]: rustls material (mesh identity, listener and cluster TLS)
//!   and the sans-IO TLS connection both drivers use.
//! - [`authz`]: sans-IO authorization rules over peer identities.
//! - [`descriptors`]: the descriptor table, sized once at start.

pub mod admin;
pub mod authz;
pub mod config;
pub mod descriptors;
pub mod driver;
pub mod etcd;
pub mod fuzzing;
pub mod health;
pub mod http1;
pub mod identity;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod snapshot;
pub mod tls;
pub mod worker;
