//! FlowFabric: a WebAssembly component host that runs tenant task code as durable
//! executions on Postgres.
//!
//! Layers, with data flowing one way (API → engine → storage; worker → engine +
//! runtime):
//! * [`api`]: HTTP (axum) — authentication, JSON, errors, streams, metrics; the
//!   only layer that knows HTTP;
//! * [`model`]: the vocabulary (executions, leases, policies), pure data;
//! * [`backend`]: the storage trait and its Postgres implementation — the only
//!   place that knows SQL;
//! * [`engine`]: validation and the scanner supervisor over a backend;
//! * [`runtime`]: wasmtime — components validated, compiled, cached, and run in
//!   a sandbox; knows nothing of storage;
//! * [`worker`]: the pool that claims executions through the engine and runs
//!   them on the runtime, implementing the guest's imports over its lease;
//! * [`components`]: upload = runtime validation + engine storage.

pub mod api;
pub mod backend;
pub mod components;
pub mod engine;
pub mod error;
pub mod model;
pub mod runtime;
pub mod worker;

pub use engine::Engine;
pub use error::{EngineError, Result};
