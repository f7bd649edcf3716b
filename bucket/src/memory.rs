//! [`MemoryObjects`]: a bounded in-memory home for the results of synchronous requests in the
//! local bucket.
//!
//! A sync client follows its signed URL within milliseconds and then never again, so a result
//! written to disk for it is a file created, read once and deleted later: file-system churn all
//! day for nothing a crash could not lose anyway (the client's open connection is the request's
//! durability). Kept here instead, it costs one copy into memory.
//!
//! An object is kept for a fixed lifetime after it is stored and never dropped before (the bound
//! is enforced by refusing new objects, which then go to disk), so a job whose result was
//! accepted here is COMPLETED with a readable result, for at least that lifetime.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use uws::results::ObjectMeta;

/// Objects held in memory, at most `max_bytes` of them, each for `lifetime`.
#[derive(Debug)]
pub struct MemoryObjects {
    max_bytes: u64,
    lifetime: Duration,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    objects: HashMap<String, HeldObject>,
    /// Keys in the order they were stored, which is also the order they expire in (one
    /// lifetime for all).
    order: VecDeque<(Instant, String)>,
    bytes: u64,
}

#[derive(Debug)]
struct HeldObject {
    bytes: Bytes,
    meta: ObjectMeta,
    expires: Instant,
}

impl MemoryObjects {
    pub fn new(max_bytes: u64, lifetime: Duration) -> MemoryObjects {
        MemoryObjects {
            max_bytes,
            lifetime,
            held: Mutex::default(),
        }
    }

    /// Whether an object of `size` bytes could be held at all (so it is worth reading).
    pub fn could_hold(&self, size: u64) -> bool {
        size <= self.max_bytes
    }

    /// Keeps the object for the lifetime if it fits under the bound once expired objects are
    /// dropped; false (nothing kept) when it does not.
    pub fn insert(&self, key: &str, bytes: Bytes, meta: ObjectMeta) -> bool {
        let size = bytes.len() as u64;
        let Ok(mut held) = self.held.lock() else {
            return false;
        };
        let now = Instant::now();
        held.expire(now);
        if held.bytes + size > self.max_bytes {
            return false;
        }
        let expires = now + self.lifetime;
        held.remove(key);
        held.bytes += size;
        held.order.push_back((expires, key.to_owned()));
        held.objects.insert(
            key.to_owned(),
            HeldObject {
                bytes,
                meta,
                expires,
            },
        );
        metrics::gauge!("skycut_memory_results_bytes").set(held.bytes as f64);
        true
    }

    /// The object and its metadata, unless it was never here, is deleted or has expired.
    pub fn get(&self, key: &str) -> Option<(Bytes, ObjectMeta)> {
        let held = self.held.lock().ok()?;
        let object = held.objects.get(key)?;
        (object.expires > Instant::now()).then(|| (object.bytes.clone(), object.meta.clone()))
    }

    /// Drops the object; true when it was held.
    pub fn remove(&self, key: &str) -> bool {
        self.held.lock().is_ok_and(|mut held| held.remove(key))
    }

    /// Bytes held now (expired objects included until the next insert drops them).
    pub fn bytes(&self) -> u64 {
        self.held.lock().map_or(0, |held| held.bytes)
    }
}

impl Held {
    fn remove(&mut self, key: &str) -> bool {
        match self.objects.remove(key) {
            Some(object) => {
                self.bytes -= object.bytes.len() as u64;
                true
            }
            None => false,
        }
    }

    /// Drops every object whose lifetime is over (the oldest first, so it stops at the first
    /// one still alive). A key stored again since its entry in `order` was made keeps its newer
    /// object.
    fn expire(&mut self, now: Instant) {
        while let Some((expires, _)) = self.order.front()
            && *expires <= now
        {
            let Some((expires, key)) = self.order.pop_front() else {
                break;
            };
            if self.objects.get(&key).is_some_and(|o| o.expires == expires) {
                self.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> ObjectMeta {
        ObjectMeta {
            content_type: "application/fits".into(),
            filename: "x.fits".into(),
        }
    }

    #[test]
    fn objects_over_the_bound_are_refused_not_evicted() {
        let memory = MemoryObjects::new(10, Duration::from_secs(60));
        assert!(memory.insert("a", Bytes::from_static(b"123456"), meta()));
        assert!(!memory.insert("b", Bytes::from_static(b"123456"), meta()));
        assert_eq!(memory.get("a").map(|(b, _)| b.len()), Some(6), "a stays");
        assert!(memory.get("b").is_none());
        assert!(memory.remove("a"));
        assert_eq!(memory.bytes(), 0);
        assert!(memory.insert("b", Bytes::from_static(b"123456"), meta()));
    }

    #[test]
    fn objects_expire_after_their_lifetime_and_free_their_room() {
        let memory = MemoryObjects::new(10, Duration::from_millis(20));
        assert!(memory.insert("a", Bytes::from_static(b"123456"), meta()));
        std::thread::sleep(Duration::from_millis(30));
        assert!(memory.get("a").is_none(), "expired");
        assert!(memory.insert("b", Bytes::from_static(b"123456"), meta()));
        assert_eq!(memory.bytes(), 6, "a was dropped to make room");
    }
}
