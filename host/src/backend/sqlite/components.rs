//! [`Components`](crate::backend::Components) on SQLite: component versions
//! and their wasm bytes (the statements are in `shared/components.rs`).

use super::SqliteBackend;
use crate::backend::shared::components::sqlite as shared;
use crate::backend::NewComponent;
use crate::error::Result;
use crate::model::{ComponentVersion, TenantId};

crate::backend::traits::implement_components!(SqliteBackend, sqlite);

/// The single writer gives concurrent uploads of one kind consecutive
/// versions; an unknown tenant is refused by the blob's foreign key.
async fn put_component(
    db: &SqliteBackend,
    tenant: TenantId,
    component: NewComponent<'_>,
) -> Result<(ComponentVersion, bool)> {
    db.quiet_write("put component", async |conn| {
        shared::put_component(conn, tenant, component).await
    })
    .await
}
