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
use futures_util::StreamExt;
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
    UwsError::ResultStore(e.to_string())
}

/// The key of the probe object the health check writes and deletes: no result key can be it
/// (those are `{job}/{attempt}/{result}.{ext}`).
const HEALTH_PROBE: &str = ".health-probe";

/// The bucket works when it takes an object and lets it be deleted, the two things every job
/// needs: an unreachable store, a missing bucket or refused credentials read as down.
#[async_trait]
impl uws::health::HealthCheck for ObjectBucket {
    fn component(&self) -> &str {
        "result bucket"
    }

    async fn check(&self) -> Result<String, UwsError> {
        let path = self.url.object_path(HEALTH_PROBE);
        let object = self.url.display_object(HEALTH_PROBE);
        let failed = |e: object_store::Error| uws_error(BucketError::from_store(&object, e));
        self.store
            .put(&path, object_store::PutPayload::from_static(b"ok"))
            .await
            .map_err(failed)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(failed(e)),
        }
        Ok(format!("{} takes objects", self.url.display_object("")))
    }
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

    async fn get_file(&self, key: &str, path: &Path) -> Result<u64, UwsError> {
        let object = self.url.display_object(key);
        let mut stream = self
            .store
            .get(&self.url.object_path(key))
            .await
            .map_err(|e| uws_error(BucketError::from_store(&object, e)))?
            .into_stream();
        let mut file = tokio::fs::File::create(path)
            .await
            .map_err(|e| uws_error(BucketError::io(path, e)))?;
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| uws_error(BucketError::from_store(&object, e)))?;
            size += chunk.len() as u64;
            file.write_all(&chunk)
                .await
                .map_err(|e| uws_error(BucketError::io(path, e)))?;
        }
        file.flush()
            .await
            .map_err(|e| uws_error(BucketError::io(path, e)))?;
        Ok(size)
    }

    async fn exists(&self, key: &str) -> Result<bool, UwsError> {
        match self.store.head(&self.url.object_path(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(uws_error(BucketError::from_store(
                &self.url.display_object(key),
                e,
            ))),
        }
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

    async fn prefixes(&self) -> Result<Vec<(String, Duration)>, UwsError> {
        let root = (!self.url.prefix.is_empty())
            .then(|| object_store::path::Path::from(self.url.prefix.as_str()));
        let listed = self
            .store
            .list_with_delimiter(root.as_ref())
            .await
            .map_err(|e| uws_error(BucketError::from_store(&self.url.display_object(""), e)))?;
        let now = time::OffsetDateTime::now_utc();
        let mut prefixes = Vec::new();
        for prefix in &listed.common_prefixes {
            let Some(name) = prefix.filename() else {
                continue;
            };
            // The newest object under it: a prefix still being written is never swept.
            let mut objects = self.store.list(Some(prefix));
            let mut newest = Duration::MAX;
            while let Some(object) = objects.next().await {
                let object = object.map_err(|e| {
                    uws_error(BucketError::from_store(&self.url.display_object(name), e))
                })?;
                let modified =
                    time::OffsetDateTime::from_unix_timestamp(object.last_modified.timestamp())
                        .unwrap_or(now);
                let age = Duration::try_from(now - modified).unwrap_or_default();
                newest = newest.min(age);
            }
            prefixes.push((name.to_owned(), newest));
        }
        Ok(prefixes)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), UwsError> {
        let path = self.url.object_path(prefix);
        let mut objects = self.store.list(Some(&path));
        while let Some(object) = objects.next().await {
            let object = object.map_err(|e| {
                uws_error(BucketError::from_store(&self.url.display_object(prefix), e))
            })?;
            match self.store.delete(&object.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    return Err(uws_error(BucketError::from_store(
                        &self.url.display_object(prefix),
                        e,
                    )));
                }
            }
        }
        Ok(())
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

    /// A GCS V4 signed URL from a service-account key, checked by recomputing the canonical
    /// request and string to sign from Google's specification (not from object_store's code)
    /// and verifying the RSA-SHA256 signature with the public half of a test-only key.
    #[tokio::test]
    async fn gcs_signed_urls_are_valid_v4_signatures() {
        use rsa::pkcs1v15::{Signature, VerifyingKey};
        use rsa::pkcs8::DecodePrivateKey;
        use rsa::signature::Verifier;
        use sha2::{Digest, Sha256};

        let pem = include_str!("../testdata/gcs-test-key.pem");
        let dir = tempfile::tempdir().expect("tempdir");
        let key_file = dir.path().join("sa.json");
        let email = "skycut-test@example-project.iam.gserviceaccount.com";
        let json = serde_json::json!({
            "type": "service_account",
            "project_id": "example-project",
            "private_key_id": "0123456789abcdef",
            "private_key": pem,
            "client_email": email,
            "token_uri": "https://oauth2.googleapis.com/token",
        });
        std::fs::write(&key_file, json.to_string()).expect("key file");
        let settings = CloudSettings {
            gcs_service_account_path: Some(key_file),
            request_timeout: Duration::from_secs(5),
            ..CloudSettings::default()
        };
        let bucket = ObjectBucket::open("gs://skycut-results/skycut", &settings).expect("open");
        let signed = bucket
            .signed_url("0a1b/result.fits", Duration::from_secs(900), "unused")
            .await
            .expect("sign offline");
        let url = object_store::signer::Url::parse(&signed).expect("url");
        assert_eq!(url.host_str(), Some("storage.googleapis.com"));
        assert_eq!(url.path(), "/skycut-results/skycut/0a1b/result.fits");
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("{k} missing from {signed}"))
        };
        assert_eq!(get("X-Goog-Algorithm"), "GOOG4-RSA-SHA256");
        assert_eq!(get("X-Goog-Expires"), "900");
        assert_eq!(get("X-Goog-SignedHeaders"), "host");
        let date = get("X-Goog-Date");
        let scope = format!("{}/auto/storage/goog4_request", &date[..8]);
        assert_eq!(get("X-Goog-Credential"), format!("{email}/{scope}"));

        let canonical_request = |path: &str| {
            let mut query: Vec<(String, String)> = pairs
                .iter()
                .filter(|(k, _)| k != "X-Goog-Signature")
                .map(|(k, v)| (rfc3986(k), rfc3986(v)))
                .collect();
            query.sort();
            let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!(
                "GET\n{path}\n{}\nhost:storage.googleapis.com\n\nhost\nUNSIGNED-PAYLOAD",
                query.join("&")
            )
        };
        let string_to_sign = |path: &str| {
            format!(
                "GOOG4-RSA-SHA256\n{date}\n{scope}\n{}",
                hex::encode(Sha256::digest(canonical_request(path).as_bytes()))
            )
        };
        let public = rsa::RsaPrivateKey::from_pkcs8_pem(pem)
            .expect("test key")
            .to_public_key();
        let verifier = VerifyingKey::<Sha256>::new(public);
        let signature = Signature::try_from(
            hex::decode(get("X-Goog-Signature"))
                .expect("hex signature")
                .as_slice(),
        )
        .expect("signature");
        verifier
            .verify(string_to_sign(url.path()).as_bytes(), &signature)
            .expect("the V4 signature verifies against the recomputed string to sign");
        // The same signature must not cover another object.
        assert!(
            verifier
                .verify(
                    string_to_sign("/skycut-results/skycut/0a1b/other.fits").as_bytes(),
                    &signature
                )
                .is_err()
        );
    }

    /// Percent-encoding of the V4 canonical query: everything but RFC 3986 unreserved bytes.
    fn rfc3986(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }
}
