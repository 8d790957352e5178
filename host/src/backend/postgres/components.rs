//! Component versions and their wasm bytes (the statements are in
//! `shared/components.rs`).

use super::PgBackend;
use crate::backend::shared::components::pg as shared;
use crate::backend::NewComponent;
use crate::backend::Run;
use crate::error::Result;
use crate::model::{ComponentVersion, TenantId};

crate::backend::traits::implement_components!(PgBackend, pg);

/// One transaction under an advisory lock on (tenant, kind), so concurrent
/// uploads of one kind get consecutive versions instead of a key conflict.
async fn put_component(
    db: &PgBackend,
    tenant: TenantId,
    component: NewComponent<'_>,
) -> Result<(ComponentVersion, bool)> {
    let op = "put component";
    db.quiet_write(op, async |tx| {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text || '/' || $2, 0))")
            .bind(tenant)
            .bind(component.kind)
            .run(&mut *tx, op)
            .await?;
        shared::put_component(tx, tenant, component).await
    })
    .await
}
