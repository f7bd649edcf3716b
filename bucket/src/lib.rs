//! Result stores ("buckets"): implementations of [`uws::results::ResultStore`].
//!
//! [`LocalBucket`] keeps objects in a directory and hands them out through URLs that the
//! frontend itself serves, signed with HMAC-SHA256 over the object key and an expiry instant;
//! [`UrlSigner`] is that signature, shared by the bucket that issues URLs and the route that
//! checks them. [`MemoryObjects`] optionally keeps synchronous requests' results in memory
//! for a short time instead.
//!
//! [`ObjectBucket`] keeps them in a GCS or S3 bucket and hands out the store's own signed URLs;
//! [`SourceCache`] reads source images from buckets into a size-bounded local cache shared by
//! every job of a worker, or reads only the byte ranges a cutout needs (`ranges`, under a
//! [`RangePolicy`]). Both go through `object_store` ([`cloud`] opens the clients).
//!
//! Architecture invariant: a bucket knows object keys, never jobs or what the objects contain.

pub mod cloud;
mod error;
mod local;
mod memory;
mod object;
mod ranges;
mod signing;
mod source_cache;

pub use cloud::{BucketUrl, CloudSettings};
pub use error::BucketError;
pub use local::LocalBucket;
pub use memory::MemoryObjects;
pub use object::ObjectBucket;
pub use ranges::{
    ListedObject, ObjectPrefix, ObjectVersion, RangePolicy, RemoteObject, write_sparse,
};
pub use signing::{SignatureError, UrlSigner};
pub use source_cache::{CacheStats, CachedSource, SourceCache};
