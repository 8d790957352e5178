//! The lease trait, declared once: the claim and every fenced write are each
//! backend's own (Postgres's claim is one planned statement in `claim.rs`,
//! SQLite's runs in its single writer).

// Leases: every method is the backend's own.
storage_methods! { $ impl Leases in leases {
    read {}
    write {}
    own {
        claim(request: &ClaimRequest) -> Vec<ClaimedExecution>;
        renew(lease: &LeaseHandle, ttl: std::time::Duration) -> DateTime<Utc>;
        complete(lease: &LeaseHandle, result: &[u8]) -> ();
        complete_many(completions: &[(LeaseHandle, &[u8])]) -> Vec<crate::error::Result<()>>;
        fail(lease: &LeaseHandle, failure: &Failure) -> FailOutcome;
        cancel_by_worker(lease: &LeaseHandle, reason: &str) -> ();
        revoke_lease(tenant: TenantId, id: ExecutionId) -> i32;
        delay(lease: &LeaseHandle, until: DateTime<Utc>) -> ();
    }
} }
