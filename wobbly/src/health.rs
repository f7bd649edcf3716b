//! The job store's answer to VOSI availability: the database (or the wobbly service in front of
//! it) answers.

use async_trait::async_trait;
use uws::UwsError;
use uws::health::HealthCheck;

use crate::{SqlJobStore, WobblyClient};

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

#[async_trait]
impl HealthCheck for WobblyClient {
    fn component(&self) -> &str {
        "job store"
    }

    async fn check(&self) -> Result<String, UwsError> {
        if self.ping().await {
            Ok("job store service and its database answer".to_owned())
        } else {
            Err(UwsError::Store(
                "the job store service does not answer".to_owned(),
            ))
        }
    }
}
