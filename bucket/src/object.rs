//! The cloud result bucket (GCS or S3): objects written through `object_store`, handed out as
//! the store's own signed URLs (GCS V4, S3 presigned GET), so result bytes never pass through
//! the frontend.
//!
//! An upload becomes visible only when it is complete (a single PUT, or a multipart upload that
//! is completed last and aborted on failure), so a job never points at half an object.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use object_store::buffered::BufWriter;
use object_store::signer::{Method, Signer};
use object_store::{Attribute, Attributes, ObjectStore, ObjectStoreExt};
use tokio::io::AsyncWriteExt;
use uws::UwsError;
use uws::results::{ObjectMeta, ResultStore};

use crate::cloud::{BucketUrl, CloudSettings};
use crate::error::BucketError;

/// A result store in a GCS or S3 bucket, under a key prefix. Cloning copies two `Arc`s.
#[derive(Debug, Clone)]
pub struct ObjectBucket {
    url: BucketUrl,
    store: Arc<dyn ObjectStore>,
    signer: Arc<dyn Signer>,
}

impl ObjectBucket {
    /// Opens the bucket at `url` (`s3://BUCKET/PREFIX` or `gs://BUCKET/PREFIX`); makes no request.
    pub fn open(url: &str, settings: &CloudSettings) -> Result<ObjectBucket, BucketError> {
        let url = BucketUrl::parse(url)?;
        let opened = settings.open(&url)?;
        Ok(ObjectBucket {
            url,
            store: opened.store,
            signer: opened.signer,
        })
    }

    async fn upload(
        &self,
        key: &str,
        source: &Path,
        meta: &ObjectMeta,
    ) -> Result<u64, BucketError> {
        let object = self.url.display_object(key);
        let mut file = tokio::fs::File::open(source)
            .await
            .map_err(|e| BucketError::io(source, e))?;
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::ContentType, meta.content_type.clone().into());
        attributes.insert(
            Attribute::ContentDisposition,
            content_disposition(&meta.filename).into(),
        );
        let mut writer = BufWriter::new(self.store.clone(), self.url.object_path(key))
            .with_attributes(attributes);
        let copied = tokio::io::copy(&mut file, &mut writer).await;
        let written = match copied {
            Ok(size) => writer.shutdown().await.map(|()| size),
            Err(e) => {
                // A multipart upload that is not completed never becomes an object; aborting it
                // frees its parts now instead of at the bucket's lifecycle rule. (After a failed
                // shutdown the writer can no longer abort: that rule cleans up.)
                if let Err(abort) = writer.abort().await {
                    tracing::debug!(object = %object, error = %abort, "aborting the upload failed");
                }
                Err(e)
            }
        };
        written.map_err(|e| match e.downcast::<object_store::Error>() {
            Ok(store) => BucketError::from_store(&object, store),
            Err(e) => BucketError::Unavailable {
                url: object.clone(),
                message: e.to_string(),
            },
        })
    }
}

/// `attachment; filename="…"` with the name reduced to characters that need no quoting rules.
fn content_disposition(filename: &str) -> String {
    let safe: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("attachment; filename=\"{safe}\"")
}

fn uws_error(e: BucketError) -> UwsError {
    UwsError::Store(format!("result bucket: {e}"))
}

#[async_trait]
impl ResultStore for ObjectBucket {
    async fn put_file(&self, key: &str, path: &Path, meta: &ObjectMeta) -> Result<u64, UwsError> {
        self.upload(key, path, meta).await.map_err(uws_error)
    }

    async fn signed_url(
        &self,
        key: &str,
        valid_for: Duration,
        _public_base: &str,
    ) -> Result<String, UwsError> {
        let url = self
            .signer
            .signed_url(Method::GET, &self.url.object_path(key), valid_for)
            .await
            .map_err(|e| uws_error(BucketError::from_store(&self.url.display_object(key), e)))?;
        Ok(url.to_string())
    }

    async fn delete(&self, key: &str) -> Result<(), UwsError> {
        match self.store.delete(&self.url.object_path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(uws_error(BucketError::from_store(
                &self.url.display_object(key),
                e,
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_disposition_names_are_plain() {
        assert_eq!(
            content_disposition("m31_circle-10.68+41.27.fits"),
            "attachment; filename=\"m31_circle-10.68+41.27.fits\""
        );
        assert_eq!(
            content_disposition("a\"b;c.fits"),
            "attachment; filename=\"a_b_c.fits\""
        );
    }
}
