//! Host bindings for the `flowfabric:task` world, generated from `wit/`.
//!
//! Imports are async (they reach Postgres) and trappable (the host can stop a
//! guest from inside an import, which is how `suspend` will never return).

wasmtime::component::bindgen!({
    world: "task",
    path: "../wit",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use self::flowfabric::task::types::{
    AttemptType, Breach, Child, FailureClass, HostError, LogLevel, ResumeCondition, Signal,
    StepOutcome, StepStart, StoredFrame, StreamMode, TaskInfo, TimeoutBehavior, UsageResult,
    Waitpoint,
};
