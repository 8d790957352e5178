//! The periodic passes' trait, declared once: each pass is a backend's own
//! (Postgres's run as set-based statements and PL/pgSQL, SQLite's inside its
//! single writer), in its module of the same name or in the module of the
//! concept the pass serves.

// Scanners: every pass is the backend's own.
storage_methods! { $ impl Scanners in scanners {
    read {}
    write {}
    own {
        reclaim_expired_leases(limit: u32) -> u64;
        promote_delayed(limit: u32) -> u64;
        fail_timed_out_attempts(limit: u32) -> u64;
        expire_past_deadline(limit: u32) -> u64;
        time_out_suspensions(limit: u32) -> u64;
        cancel_pending_siblings(limit: u32) -> u64;
        wake_waiting_parents(limit: u32) -> u64;
        reset_due_budgets(limit: u32) -> u64;
        prune_events(retention: std::time::Duration, limit: u32) -> u64;
    }
} }
