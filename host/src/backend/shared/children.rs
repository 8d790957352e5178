//! Child executions: spawning one into the parent's flow and waiting for
//! them are each backend's own (Postgres locks the parent and resumes it
//! from the completion outbox's trigger; SQLite resumes it in the
//! transaction that ends its last child).

storage_methods! { $ impl Children in children {
    read {}
    write {}
    own {
        spawn_child(lease: &LeaseHandle, spawn: ChildSpawn<'_>) -> SpawnedChild;
        wait_children(lease: &LeaseHandle, timeout: Option<Duration>, on_timeout: TimeoutBehavior) -> ChildrenOutcome;
    }
} }
