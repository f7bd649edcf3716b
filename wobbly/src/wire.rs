//! The JSON encoding of job parameters and results in their TEXT columns (a storage format, so
//! versioned by its shape: add optional fields only).

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub(crate) struct StoredParameter {
    pub name: String,
    pub value: String,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct StoredResult {
    pub id: String,
    pub key: String,
    pub mime_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}
