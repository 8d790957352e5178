//! An execution's policy as the embedded backend stores it: JSON without the
//! parts at their defaults ([`ExecutionPolicy::stored`]), as on Postgres.
//!
//! The default policy is most of an execution's row; leaving it out puts
//! about twice as many rows on a page, so a claim or a completion batch
//! changes half as many pages, and SQLite's WAL writes whole pages.

use std::ops::{Deref, DerefMut};

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::sqlite::{SqliteArgumentValue, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Sqlite, Type};

use crate::model::ExecutionPolicy;

/// The policy column of an execution's row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredPolicy(pub ExecutionPolicy);

impl Deref for StoredPolicy {
    type Target = ExecutionPolicy;

    fn deref(&self) -> &ExecutionPolicy {
        &self.0
    }
}

impl DerefMut for StoredPolicy {
    fn deref_mut(&mut self) -> &mut ExecutionPolicy {
        &mut self.0
    }
}

impl Type<Sqlite> for StoredPolicy {
    fn type_info() -> SqliteTypeInfo {
        <&str as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <&str as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for StoredPolicy {
    fn encode_by_ref(&self, buf: &mut Vec<SqliteArgumentValue<'_>>) -> Result<IsNull, BoxDynError> {
        Encode::<Sqlite>::encode(self.0.stored().to_string(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for StoredPolicy {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<Sqlite>>::decode(value)?;
        Ok(Self(serde_json::from_str(text)?))
    }
}

/// Read on the writer's handle as [`Decode`] reads it: the text, as JSON.
impl super::raw::Column for StoredPolicy {
    fn read(row: &super::raw::Row<'_>, at: std::ffi::c_int) -> Result<Self, BoxDynError> {
        sqlx::types::Json::<ExecutionPolicy>::read(row, at).map(|policy| Self(policy.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_compact_form_is_written_and_both_forms_read_back() {
        let mut conn = super::super::raw::memory_connection(&[]).await;
        let custom = ExecutionPolicy {
            max_replays: Some(2),
            ..ExecutionPolicy::default()
        };
        for policy in [ExecutionPolicy::default(), custom] {
            let (text, back): (String, StoredPolicy) = sqlx::query_as("SELECT ?1, ?1")
                .bind(StoredPolicy(policy.clone()))
                .fetch_one(&mut conn)
                .await
                .unwrap();
            assert_eq!(text, policy.stored().to_string());
            assert_eq!(back.0, policy);
        }
        // A row written before the compact form holds the whole policy.
        let whole = serde_json::to_string(&ExecutionPolicy::default()).unwrap();
        let (back,): (StoredPolicy,) = sqlx::query_as("SELECT ?")
            .bind(whole)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(back.0, ExecutionPolicy::default());
    }
}
