//! The job store's answer to VOSI availability: the database answers a trivial query.

use async_trait::async_trait;
use uws::UwsError;
use uws::health::HealthCheck;

use crate::SqlJobStore;

#[async_trait]
impl HealthCheck for SqlJobStore {
    fn component(&self) -> &str {
        "job store"
    }

    async fn check(&self) -> Result<String, UwsError> {
        if self.ping().await {
            Ok("database answers".to_owned())
        } else {
            Err(UwsError::Store("the database does not answer".to_owned()))
        }
    }
}
