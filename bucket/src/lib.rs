//! Result stores ("buckets"): implementations of [`uws::results::ResultStore`].
//!
//! [`LocalBucket`] keeps objects in a directory and hands them out through URLs that the
//! frontend itself serves, signed with HMAC-SHA256 over the object key and an expiry instant;
//! [`UrlSigner`] is that signature, shared by the bucket that issues URLs and the route that
//! checks them.
//!
//! Architecture invariant: a bucket knows object keys, never jobs or what the objects contain.

mod local;
mod signing;

pub use local::LocalBucket;
pub use signing::{SignatureError, UrlSigner};
