//! Placeholder until the PostgreSQL backend lands.
use std::sync::Arc;

use super::{Fence, Store, StoreError};

impl Store {
    /// Opens the PostgreSQL database at `url`.
    pub async fn open_postgres(_url: &str, _fence: Arc<Fence>) -> Result<Self, StoreError> {
        Err(StoreError::Task(
            "PostgreSQL is not supported by this build".into(),
        ))
    }
}
