//! The tailmesh node agent.
//!
//! Built so far: the sans-IO HTTP/1.1 request framing and hardening layer
//! ([`http1`]). The drivers, routing, config and admin server (issue #4)
//! are not built yet; the `node-agent` binary says so.

pub mod config;
pub mod fuzzing;
pub mod http1;
