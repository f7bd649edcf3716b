//! Signed URLs for objects the service serves itself: `…/files/{key}?expires={unix}&signature={hex}`
//! with an HMAC-SHA256 over the key and the expiry, so a URL cannot be altered or extended.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a signed URL was refused; all of them answer 403 with no data.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("the signed URL has expired")]
    Expired,
    #[error("the URL signature is not valid")]
    Invalid,
}

/// Signs and checks object URLs with one secret key. Cloning copies the key (32 bytes).
#[derive(Clone)]
pub struct UrlSigner {
    key: Vec<u8>,
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UrlSigner([redacted])")
    }
}

impl UrlSigner {
    pub fn new(key: &[u8]) -> UrlSigner {
        UrlSigner { key: key.to_vec() }
    }

    fn mac(&self, key: &str, expires: i64) -> HmacSha256 {
        // HMAC takes keys of any length, so this cannot fail.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(key.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac
    }

    /// The hex signature of `key` valid until the Unix time `expires`.
    pub fn sign(&self, key: &str, expires: i64) -> String {
        hex::encode(self.mac(key, expires).finalize().into_bytes())
    }

    /// Checks a signature (in constant time) and the expiry against `now` (Unix seconds).
    pub fn verify(
        &self,
        key: &str,
        expires: i64,
        signature: &str,
        now: i64,
    ) -> Result<(), SignatureError> {
        let bytes = hex::decode(signature).map_err(|_| SignatureError::Invalid)?;
        self.mac(key, expires)
            .verify_slice(&bytes)
            .map_err(|_| SignatureError::Invalid)?;
        if now > expires {
            return Err(SignatureError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_verifies_until_expiry() {
        let s = UrlSigner::new(b"secret");
        let sig = s.sign("job/result.fits", 1000);
        assert_eq!(s.verify("job/result.fits", 1000, &sig, 999), Ok(()));
        assert_eq!(
            s.verify("job/result.fits", 1000, &sig, 1001),
            Err(SignatureError::Expired)
        );
    }

    #[test]
    fn tampered_urls_are_refused() {
        let s = UrlSigner::new(b"secret");
        let sig = s.sign("job/result.fits", 1000);
        assert_eq!(
            s.verify("job/other.fits", 1000, &sig, 0),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            s.verify("job/result.fits", 2000, &sig, 0),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            s.verify("job/result.fits", 1000, "zz", 0),
            Err(SignatureError::Invalid)
        );
        let other = UrlSigner::new(b"other");
        assert_eq!(
            other.verify("job/result.fits", 1000, &sig, 0),
            Err(SignatureError::Invalid)
        );
    }
}
